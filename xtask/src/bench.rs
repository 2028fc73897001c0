pub fn run(_s: u64, _r: u32) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
