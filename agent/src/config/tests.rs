use super::*;

fn errors(text: &str) -> Vec<(usize, usize, String)> {
    Config::parse(text, "t.toml")
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| (e.line, e.column, e.message))
        .collect()
}

#[test]
fn embedded_default_equals_built_in_defaults() {
    // The shipped file documents the defaults; it must not drift from the code.
    assert_eq!(Config::embedded(), Config::default());
}

#[test]
fn empty_file_means_defaults() {
    assert_eq!(Config::parse("", "t").unwrap(), Config::default());
}

#[test]
fn reads_values() {
    let c = Config::parse("[agent]\nlisten = \"0.0.0.0:9100\"\ninterval = \"250ms\"\n[probes.process_exit]\nring_buffer_kb = 8\n", "t").unwrap();
    assert_eq!(c.agent.listen.port(), 9100);
    assert_eq!(c.agent.interval.get().as_millis(), 250);
    assert_eq!(c.probes.process_exit.ring_buffer_kb, 8);
}

#[test]
fn reports_every_error_with_line_and_column() {
    let text = "[agent]\nlisten = \"nowhere\"\n\n[probes.tcp_retransmit]\nenabeld = true\n\n[labels]\nmax_series_per_metric = \"many\"\n[bogus]\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (2, 10), "{errs:?}");
    assert!(errs[0].2.contains("socket address"), "{errs:?}");
    assert_eq!(errs[1].0, 5, "{errs:?}");
    assert!(errs[1].2.contains("unknown field `enabeld`"), "{errs:?}");
    assert_eq!(errs[2].0, 8, "{errs:?}");
    assert_eq!((errs[3].0, errs[3].1), (9, 2), "{errs:?}");
    assert!(errs[3].2.contains("unknown section `bogus`"), "{errs:?}");
}

#[test]
fn syntax_error_has_position() {
    let errs = errors("[agent]\nlisten = \n");
    assert_eq!(errs[0].0, 2, "{errs:?}");
}

#[test]
fn validation_points_at_the_field() {
    let errs = errors("[probes.process_exit]\n\nring_buffer_kb = 6\n");
    assert_eq!((errs[0].0, errs[0].1), (3, 1), "{errs:?}");
    assert!(errs[0].2.contains("power of two"), "{errs:?}");
}

#[test]
fn bad_duration_is_explained() {
    let errs = errors("[agent]\ninterval = \"5\"\n");
    assert!(errs[0].2.contains("no unit"), "{errs:?}");
    assert_eq!(errs[0].0, 2);
}

#[test]
fn display_is_file_line_column() {
    let e = Config::parse("[nope]\n", "gimbal.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "gimbal.toml:1:2: unknown section `nope`, expected one of `agent`, `probes`, `labels`, `targets`, `alerting`, `rules`, `remediation`, `throttle`, `restart`, `supervise`, `signal`, `gpu`, `verdict`, `kubernetes`, `cluster`"
    );
}

#[test]
fn targets_and_alerting() {
    let c = Config::parse(
        "[[targets]]\nname = \"trainer\"\ncgroup = \"system.slice/trainer.service\"\n\n[alerting]\nalertmanagers = [\"http://127.0.0.1:9093\", \"http://127.0.0.1:9094\"]\nresend_interval = \"30s\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        (
            c.targets[0].name.as_str(),
            c.targets[0].cgroup.as_deref().unwrap_or("")
        ),
        ("trainer", "system.slice/trainer.service")
    );
    assert_eq!(
        c.targets[0].availability_objective, 0.999,
        "defaults fill the rest"
    );
    assert!(c.targets[0].latency_syscalls.contains(&"read".to_string()));
    assert_eq!(c.alerting.alertmanagers.len(), 2);
    assert_eq!(c.alerting.resend_interval.get().as_secs(), 30);
}

#[test]
fn unknown_target_keys_are_rejected() {
    let errs = errors("[[targets]]\nname = \"a\"\ncgroup = \"x\"\nselector = \"a.service\"\n");
    assert_eq!(errs[0].0, 4, "{errs:?}");
    assert!(errs[0].2.contains("unknown field `selector`"), "{errs:?}");
}

#[test]
fn target_objectives_and_syscalls_are_checked() {
    let errs = errors("[[targets]]\nname = \"a\"\ncgroup = \"x\"\navailability_objective = 1.5\nlatency_syscalls = [\"read\", \"raed\"]\n");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, 4, "{errs:?}");
    assert_eq!(errs[1].0, 5, "{errs:?}");
    assert!(errs[1].2.contains("`raed` is not a syscall"), "{errs:?}");
}

#[test]
fn stall_settings_are_checked_with_their_line() {
    let errs = errors("[[targets]]\nname = \"a\"\ncgroup = \"x\"\nstall_for = \"500ms\"\nprogress_syscalls = [\"write\", \"wirte\"]\n[[targets]]\nname = \"b\"\ncgroup = \"y\"\nstall_for = \"25h\"\n[[targets]]\nname = \"c\"\ncgroup = \"z\"\nstall_for = \"1m\"\nprogress_syscalls = []\n");
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(
        errs[0].0 == 4 && errs[0].2.contains("at least 1s"),
        "{errs:?}"
    );
    assert!(
        errs[1].0 == 5 && errs[1].2.contains("`wirte` is not a syscall"),
        "{errs:?}"
    );
    assert!(errs[2].0 == 9 && errs[2].2.contains("at most"), "{errs:?}");
    assert!(
        errs[3].0 == 14 && errs[3].2.contains("at least one syscall"),
        "{errs:?}"
    );
    let c = Config::parse("[[targets]]\nname = \"a\"\ncgroup = \"x\"\n", "t").unwrap();
    assert_eq!(c.targets[0].stall_for, None, "off unless set");
    assert!(c.targets[0]
        .progress_syscalls
        .contains(&"sendmsg".to_string()));
}

#[test]
fn targets_by_unit_pod_or_container_become_globs() {
    let c = Config::parse(
        "[[targets]]\nname = \"u\"\nunit = \"trainer.service\"\n[[targets]]\nname = \"p\"\npod_uid = \"12ab-34\"\n[[targets]]\nname = \"c\"\ncontainer_id = \"deadbeef\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.targets[0].patterns(), vec!["**/trainer.service"]);
    assert_eq!(
        c.targets[1].patterns(),
        vec!["**/*pod12ab-34", "**/*pod12ab_34.slice"]
    );
    assert_eq!(c.targets[2].patterns(), vec!["**/*deadbeef*"]);
    let by_process = Config::parse(
        "[[targets]]\nname = \"p\"\ncomm = \"python3\"\nexe = \"/usr/bin/python3\"\n",
        "t",
    )
    .unwrap();
    assert!(
        by_process.targets[0].patterns().is_empty(),
        "found by scanning /proc instead"
    );
    let errs = errors("[[targets]]\nname = \"two\"\nunit = \"a.service\"\ncgroup = \"x\"\n[[targets]]\nname = \"none\"\n");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter().all(|e| e.2.contains("exactly one selector")),
        "{errs:?}"
    );
}

#[test]
fn restarts_need_a_unit_target_and_supervised_commands_an_absolute_program() {
    let text = "[[targets]]\nname = \"web\"\nunit = \"web.service\"\n\n[[targets]]\nname = \"pod\"\npod_uid = \"1234\"\n\n\
                [[restart]]\ntarget = \"web\"\n\n[[restart]]\ntarget = \"pod\"\n\n[[restart]]\ntarget = \"nobody\"\n\n\
                [[supervise]]\nname = \"ok\"\ncommand = [\"/bin/true\"]\n\n[[supervise]]\nname = \"rel\"\ncommand = [\"true\"]\n";
    let errs = errors(text);
    let messages: Vec<&str> = errs.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(errs.len(), 3, "{messages:#?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`pod` selects a pod: set [cluster] evictions = true")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`nobody` is not a [[targets]] name")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("of `rel` must start with the program's absolute path")),
        "{messages:#?}"
    );
    let ok = Config::parse(
        "[[targets]]\nname = \"web\"\nunit = \"web.service\"\n[[restart]]\ntarget = \"web\"\n[[supervise]]\nname = \"a\"\ncommand = [\"/bin/sleep\", \"1\"]\nuser = \"nobody\"\nrestart = \"always\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(ok.restarts[0].when, "TargetDown");
    assert_eq!(ok.supervise[0].restart, RestartWhen::Always);
    assert_eq!(ok.supervise[0].cwd, std::path::Path::new("/"));
}

#[test]
fn a_throttle_limits_or_freezes_never_neither_nor_both() {
    let rule = |body: &str| {
        format!("[[throttle]]\nname = \"t\"\nwhen = \"TargetDown\"\ncgroups = [\"batch.slice\"]\n{body}")
    };
    for bad in [
        "",
        "cpu = 0.5\nfreeze = true\n",
        "memory_high = \"1K\"\n",
        "memory_high = \"2GB\"\n",
    ] {
        assert_eq!(
            errors(&rule(bad)).len(),
            1,
            "{bad:?}: {:?}",
            errors(&rule(bad))
        );
    }
    let ok = Config::parse(&rule("cpu = 0.5\nmemory_high = \"512M\"\n"), "t").unwrap();
    assert_eq!(ok.throttles[0].memory_high, Some(ByteSize(512 << 20)));
    assert!(
        Config::parse(&rule("freeze = true\n"), "t")
            .unwrap()
            .throttles[0]
            .freeze
    );
}

#[test]
fn a_cap_of_zero_concurrent_actions_is_refused_at_its_line() {
    let errs = errors("[remediation]\nmode = \"enforce\"\nmax_concurrent = 0\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (3, 1), "{errs:?}");
    assert!(errs[0].2.contains("at least 1"), "{errs:?}");
}

/// (line, column) of the one error whose message contains `needle`.
fn at(errs: &[(usize, usize, String)], needle: &str) -> (usize, usize) {
    let found: Vec<_> = errs.iter().filter(|e| e.2.contains(needle)).collect();
    assert_eq!(found.len(), 1, "one error with {needle:?}: {errs:#?}");
    (found[0].0, found[0].1)
}

#[test]
fn semantic_errors_point_at_the_field_not_the_file() {
    let errs = errors(
        "[agent]
listen = \"127.0.0.1:1\"
  interval = \"50ms\"
",
    );
    assert_eq!(at(&errs, "`agent.interval` must be at least 100ms"), (3, 3));
    let errs = errors(
        "[remediation]
backoff_max = \"1s\"
",
    );
    assert_eq!(
        at(&errs, "`remediation.backoff` must not be longer"),
        (1, 2),
        "a default in the way: reported at its section"
    );
}

#[test]
fn a_value_contained_in_an_earlier_one_is_reported_at_its_own_line() {
    // The old lookup searched the text for `api` and found `web-api` on line 2.
    let text = "[[targets]]\nname = \"web-api\"\ncgroup = \"a\"\n[[targets]]\nname = \"api\"\n";
    assert_eq!(
        at(&errors(text), "`api` needs exactly one selector"),
        (5, 1)
    );
    let text = "[[targets]]\nname = \"a\"\ncgroup = \"x\"\nlatency_syscalls = [\"readv\", \"read\", \"rea\"]\n";
    assert_eq!(at(&errors(text), "`rea` is not a syscall"), (4, 38));
}

#[test]
fn entries_after_one_that_failed_keep_their_own_positions() {
    let text = "[[targets]]\nname = 1\n[[targets]]\nname = \"b\"\ncgroup = \"x/..\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].0, 2, "{errs:#?}");
    assert_eq!(at(&errs, "`..` segment"), (5, 1));
}

#[test]
fn the_ring_buffer_is_what_the_kernel_takes_and_bounded() {
    let errs = errors("[probes.process_exit]\nring_buffer_kb = 2147483648\n");
    assert_eq!(at(&errs, "must be at most 65536"), (2, 1));
    assert!(validate::ring_buffer_kb(4, 4096).is_ok());
    assert!(validate::ring_buffer_kb(65536, 4096).is_ok());
    assert!(validate::ring_buffer_kb(131072, 4096).is_err());
    assert!(
        validate::ring_buffer_kb(12, 4096).is_err(),
        "not a power of two"
    );
    let err = validate::ring_buffer_kb(8, 16384).unwrap_err();
    assert!(err.contains("at least 16 (the page size)"), "{err}");
    assert!(validate::ring_buffer_kb(16, 16384).is_ok());
}

#[test]
fn durations_are_bounded_per_setting_where_they_are_written() {
    let errs = errors("[alerting]\nresend_interval = \"4294967295h\"\n");
    let (line, col) = at(&errs, "too long");
    assert_eq!((line, col), (2, 19), "{errs:#?}");
    let errs = errors("[alerting]\nresend_interval = \"2h\"\nlatency_for = \"25h\"\n[[throttle]]\nname = \"t\"\nwhen = \"X\"\ncgroups = [\"b\"]\nfreeze = true\nttl = \"48h\"\n[[rules]]\nalert = \"A\"\nexpr = \"gimbal_target_up < 1\"\nfor = \"0ms\"\n[agent]\ninterval = \"1m\"\n");
    assert_eq!(
        at(&errs, "`alerting.resend_interval` must be at most 1h"),
        (2, 1)
    );
    assert_eq!(
        at(&errs, "`alerting.latency_for` must be at most 24h"),
        (3, 1)
    );
    assert_eq!(at(&errs, "`throttle.ttl` must be at most 24h"), (9, 1));
    assert_eq!(at(&errs, "`agent.interval` must be at most 10s"), (15, 1));
    assert_eq!(errs.len(), 4, "`for = 0ms` is fine: {errs:#?}");
}

#[test]
fn traversal_in_any_cgroup_glob_or_name_is_refused_at_its_position() {
    let text = "[[targets]]\nname = \"a\"\ncgroup = \"x/../y\"\n\
                [[targets]]\nname = \"b\"\nunit = \"..\"\n\
                [[targets]]\nname = \"c\"\ncontainer_id = \"ab/../cd\"\n\
                [[throttle]]\nname = \"t\"\nwhen = \"X\"\nfreeze = true\ncgroups = [\"batch.slice\", \"x/..\"]\n\
                [[signal]]\nname = \"s\"\nwhen = \"X\"\nsignal = \"SIGUSR1\"\ncgroups = [\"./x\"]\n\
                [remediation]\nprotected = [\"sshd.service\", \"..\"]\nsupervised_cgroup = \"a/./b\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 7, "{errs:#?}");
    assert_eq!(at(&errs, "`targets.cgroup` of `a`"), (3, 1));
    assert_eq!(at(&errs, "`targets.unit` of `b`"), (6, 1));
    assert_eq!(at(&errs, "`targets.container_id` of `c`"), (9, 1));
    assert_eq!(at(&errs, "[[throttle]] `t`: `x/..`"), (14, 27));
    assert_eq!(at(&errs, "[[signal]] `s`: `./x`"), (19, 12));
    assert_eq!(at(&errs, "`remediation.protected` `..`"), (21, 30));
    assert_eq!(at(&errs, "`remediation.supervised_cgroup`"), (22, 1));
    for ok in [
        "system.slice/*.service",
        "**/trainer.service",
        "/kubepods/**",
        "a.b/..c/c..",
    ] {
        assert!(validate::cgroup_glob(ok).is_ok(), "{ok}");
    }
}

#[test]
fn gpu_section_errors_point_at_their_keys() {
    // An unknown action is refused by deserializing, at its value.
    let errs = errors("[gpu]\nkmsg = true\n[gpu.xid_actions]\n\"14\" = \"explode\"\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, 4, "{errs:?}");
    assert!(errs[0].2.contains("explode"), "{errs:?}");
    // The rest by validation, each at its key, all at once.
    let errs = errors(
        "[gpu.xid_actions]\n\"x13\" = \"none\"\n[[gpu.rules]]\nxids = [13, 0]\ncount = 0\nwindow = \"48h\"\nalert = \"bad name\"\n",
    );
    let at = |needle: &str| {
        errs.iter()
            .find(|e| e.2.contains(needle))
            .map(|e| (e.0, e.1))
            .unwrap_or_else(|| panic!("no error about {needle}: {errs:?}"))
    };
    assert_eq!(errs.len(), 5, "{errs:?}");
    assert_eq!(at("gpu.xid_actions"), (2, 1));
    assert_eq!(at("`0` is no XID"), (4, 13));
    assert_eq!(at("gpu.rules.count"), (5, 1));
    assert_eq!(at("gpu.rules.window"), (6, 1));
    assert_eq!(at("gpu.rules.alert"), (7, 1));
    let ok = Config::parse(
        "[gpu]\nnvml = false\n[gpu.xid_actions]\n\"13\" = \"none\"\n",
        "t",
    )
    .unwrap();
    assert!(!ok.gpu.nvml);
}

#[test]
fn verdict_section_errors_point_at_their_keys() {
    let errs = errors("[verdict]\nrise = 0\nfloor = 0\ncpu_pressure_low = 50.0\ncpu_pressure_high = 40.0\ndrain_burn = 0.5\n[[targets]]\nname = \"a\"\ncgroup = \"a.service\"\n[targets.verdict]\nfloor = 101\ncpu_pressure_high = 200.0\n");
    let at = |needle: &str| {
        errs.iter()
            .find(|e| e.2.contains(needle))
            .map(|e| (e.0, e.1))
            .unwrap_or_else(|| panic!("no error about {needle}: {errs:?}"))
    };
    assert_eq!(at("`verdict.rise`"), (2, 1));
    assert_eq!(at("`verdict.floor`"), (3, 1));
    assert_eq!(at("`verdict.cpu_pressure_high` must be above"), (5, 1));
    assert_eq!(at("`verdict.drain_burn`"), (6, 1));
    assert_eq!(at("`targets.verdict.floor`"), (11, 1));
    assert_eq!(
        at("`targets.verdict.cpu_pressure_high` must be a percentage"),
        (12, 1)
    );
    // An unknown key is refused where it is written.
    let errs =
        errors("[[targets]]\nname = \"a\"\ncgroup = \"a.service\"\n[targets.verdict]\nflor = 3\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, 5, "{errs:?}");
    // Overrides apply over the defaults.
    let c = Config::parse(
        "[verdict]\nfloor = 20\nagent_check_listen = \"127.0.0.1:9978\"\n[[targets]]\nname = \"a\"\ncgroup = \"a.service\"\n[targets.verdict]\nlatency = false\n",
        "t",
    )
    .unwrap();
    let s = c.verdict.signals(c.targets[0].verdict.as_ref());
    assert!(!s.latency && s.burn && s.cpu_pressure);
    assert_eq!(s.floor, 20);
    assert_eq!(
        c.verdict.agent_check_listen,
        Some("127.0.0.1:9978".parse().unwrap())
    );
}

#[test]
fn targets_by_pod_name_take_kubernetes_globs_and_say_where_one_is_wrong() {
    let ok = "[[targets]]\nname = \"t\"\nnamespace = \"ml\"\npod = \"trainer-*\"\n\
              [[targets]]\nname = \"ns\"\nnamespace = \"ml-*\"\n\
              [[targets]]\nname = \"any\"\npod = \"*\"\n";
    let c = Config::parse(ok, "t").expect("valid");
    assert!(c.targets.iter().all(|t| t.by_pod_name()));
    assert!(
        c.targets[0].patterns().is_empty(),
        "resolved per tick, not fixed globs"
    );
    assert_eq!(c.targets[0].selector(), "pod ml/trainer-*");
    let text = "[[targets]]\nname = \"a\"\nnamespace = \"ml\"\npod = \"Trainer_0\"\n\
                [[targets]]\nname = \"b\"\nnamespace = \"m/../l\"\n\
                [[targets]]\nname = \"c\"\npod = \"x\"\nunit = \"x.service\"\n\
                [[targets]]\nname = \"d\"\npod = \"\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert_eq!(at(&errs, "`targets.pod` of `a`"), (4, 1));
    assert_eq!(at(&errs, "`targets.namespace` of `b`"), (7, 1));
    assert_eq!(at(&errs, "`c` needs exactly one selector"), (9, 1));
    assert_eq!(at(&errs, "`targets.pod` of `d`"), (14, 1));
}

#[test]
fn classic_buckets_that_are_no_kernel_bound_are_named_where_written() {
    let text = "[labels]\nclassic_buckets = [\"3.814us\", \"4us\", \"1ms\"]\n";
    let e = Config::parse(text, "gimbal.toml").unwrap_err().to_string();
    assert!(
        e.contains(
            "gimbal.toml:2:31: `labels.classic_buckets` is `4us`, not a kernel bucket bound"
        ),
        "{e}"
    );
    assert!(e.contains("the nearest are 3.814us and 4.536us"), "{e}");
    assert!(
        e.contains(
            "gimbal.toml:2:38: `labels.classic_buckets` is `1ms`, not a kernel bucket bound"
        ),
        "{e}"
    );
    let e = Config::parse(
        "[labels]\nclassic_buckets = [\"7.629us\", \"3.814us\"]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t:2:31: `labels.classic_buckets` is `3.814us`: the bounds must increase"),
        "{e}"
    );
    let e = Config::parse("[labels]\nclassic_buckets = \"some\"\n", "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t:2:19:") && e.contains("expected \"full\""),
        "{e}"
    );
    let full = Config::parse("[labels]\nclassic_buckets = \"full\"\n", "t").unwrap();
    assert_eq!(
        full.labels.classic_buckets,
        crate::config::ClassicBuckets::full()
    );
    let e = Config::parse("[labels]\nclassic_buckets = []\n", "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no bucket bounds"), "{e}");
}

#[test]
fn an_alertmanager_entry_takes_what_it_leaves_out_from_alerting_by_group() {
    let text = "[alerting]\ntls_ca_file = \"/ca\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"\nbearer_token_file = \"/t\"\nalertmanagers = [\n  \"https://a:9093\",\n  { url = \"https://b:9093\", tls_cert_file = \"/b.crt\", tls_key_file = \"/b.key\", basic_auth_username = \"u\", basic_auth_password_file = \"/p\" },\n]\n";
    // The files are not there: the shape alone, as deserialized.
    let c: toml::Table = toml::from_str(text).unwrap();
    let alerting: AlertingConfig = c["alerting"].clone().try_into().unwrap();
    let [a, b] = &alerting.endpoints()[..] else {
        panic!("two endpoints")
    };
    let p = |s: &str| Some(std::path::PathBuf::from(s));
    assert_eq!(
        (&a.url[..], &a.tls_cert_file, &a.bearer_token_file),
        ("https://a:9093", &p("/c"), &p("/t"))
    );
    assert_eq!(
        (&b.tls_ca_file, &b.tls_cert_file, &b.tls_key_file),
        (&p("/ca"), &p("/b.crt"), &p("/b.key"))
    );
    assert_eq!(
        (&b.bearer_token_file, b.basic_auth_username.as_deref()),
        (&None, Some("u"))
    );
    let err = Config::parse(
        "[alerting]\nalertmanagers = [{ url = \"http://a:1\", tls_crt = \"/x\" }]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("tls_crt"), "{err}");
}

#[test]
fn a_series_budget_below_one_histogram_is_named_with_its_line() {
    let e = Config::parse("[labels]\nmax_series = 24\n", "gimbal.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gimbal.toml:2:1: `labels.max_series` must be at least 25 (one latency histogram's series"),
        "{e}"
    );
    // With every kernel bucket a histogram is 100 series.
    let e = Config::parse(
        "[labels]\nmax_series = 99\nclassic_buckets = \"full\"\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("must be at least 100"), "{e}");
    // A config from before the budget in series still works; both hold.
    let c = Config::parse("[labels]\nmax_series_per_metric = 50\n", "t").unwrap();
    assert_eq!(
        (c.labels.max_series_per_metric, c.labels.max_series),
        (50, 4_000)
    );
}

#[test]
fn a_sample_of_none_or_too_few_is_refused_at_its_key() {
    let text = "[probes.syscall_latency]\ntimed_syscalls = [\"*\"]\nsample_one_in = 0\n";
    assert_eq!(
        at(
            &errors(text),
            "`probes.syscall_latency.sample_one_in` must be from 1"
        ),
        (3, 1)
    );
    let c = Config::parse("[probes.syscall_latency]\nsample_one_in = 16\n", "t").unwrap();
    assert_eq!(c.probes.syscall_latency.sample_one_in, 16);
}

#[test]
fn a_syscall_hook_is_one_of_three_and_a_typo_is_refused_at_its_key() {
    let c = Config::parse("[probes.syscall_latency]\nhook = \"tracepoints\"\n", "t").unwrap();
    assert_eq!(
        c.probes.syscall_latency.hook,
        crate::config::SyscallHookChoice::Tracepoints
    );
    let errs = errors("[probes.syscall_latency]\n\nhook = \"fentry\"\n");
    let (line, _) = at(&errs, "unknown variant `fentry`");
    assert_eq!(line, 3, "{errs:?}");
    assert!(
        errs[0].2.contains("`auto`, `dispatcher`, `tracepoints`"),
        "the error lists the choices: {errs:?}"
    );
}
