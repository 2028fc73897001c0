//! The test workload: does exactly what it is told, and nothing else that the tests count
//! (it never calls getppid or clock_nanosleep except when told to).
//!
//! gimbal-workload getppid N | badclose N | sleep COUNT MS | migrate N | spread DIR N | exit CODE | segv | alloc MB | pause
//!                 | forks N | tcp-server ADDR | tcp-client ADDR BYTES | spin N | announce SOCKET
//!                 | reads COUNT MB | http-server ADDR | write-then-block COUNT MS
//!                 | on-usr1 MODE ARGS... (waits for SIGUSR1, then does MODE)
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("gimbal-workload: argument {i} missing or not a number: {args:?}");
        std::process::exit(64)
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("on-usr1") {
        // A rank that lives until the test says, then exits or allocates on its own.
        // SAFETY: a zeroed sigset with SIGUSR1 added, blocked, then waited for.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
        }
        args.remove(1);
    }
    match args.get(1).map(String::as_str) {
        Some("getppid") => {
            for _ in 0..arg(&args, 2) {
                // SAFETY: a raw syscall without arguments.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
        }
        Some("badclose") => {
            for _ in 0..arg(&args, 2) {
                // SAFETY: closing fd -1 only fails (EBADF); nothing else in this process
                // closes an invalid fd, so each EBADF of `close` is one of these.
                unsafe { libc::syscall(libc::SYS_close, -1) };
            }
        }
        Some("spin") => {
            // The benchmark's loop: the cheapest real syscall. Prints the time it took, so
            // process start-up is not measured.
            let n = arg(&args, 2);
            let start = std::time::Instant::now();
            for _ in 0..n {
                // SAFETY: getppid takes no arguments and cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            println!("{}", start.elapsed().as_nanos());
        }
        Some("sleep") => {
            let ms = arg(&args, 3);
            let ts = libc::timespec {
                tv_sec: (ms / 1000) as i64,
                tv_nsec: ((ms % 1000) * 1_000_000) as i64,
            };
            for _ in 0..arg(&args, 2) {
                let start = std::time::Instant::now();
                // SAFETY: valid timespec pointer, no remainder requested.
                unsafe {
                    libc::syscall(
                        libc::SYS_clock_nanosleep,
                        libc::CLOCK_MONOTONIC,
                        0,
                        &ts,
                        std::ptr::null_mut::<libc::timespec>(),
                    )
                };
                // Ground truth for the test: the syscall happened inside this window.
                println!("{}", start.elapsed().as_nanos());
            }
        }
        Some("migrate") => {
            // Each sched_setaffinity moves this thread to the other CPU while inside the
            // syscall: it enters on one CPU and returns on another, every time.
            for i in 0..arg(&args, 2) {
                // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread (pid 0).
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET((i % 2) as usize, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        eprintln!("sched_setaffinity: {}", std::io::Error::last_os_error());
                        std::process::exit(1);
                    }
                }
            }
        }
        Some("spread") => {
            // One short-lived child in each of DIR/c0 .. DIR/c<N-1>: many cgroups, quickly.
            let dir = &args[2];
            for i in 0..arg(&args, 3) {
                let procs = std::ffi::CString::new(format!("{dir}/c{i}/cgroup.procs")).unwrap();
                // SAFETY: the child makes raw syscalls only, then _exit.
                match unsafe { libc::fork() } {
                    // SAFETY: as above; `procs` was made before the fork.
                    0 => unsafe {
                        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                        let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                        libc::syscall(libc::SYS_getppid);
                        libc::_exit(if ok { 0 } else { 1 })
                    },
                    // SAFETY: waits on our own child with a status we own.
                    pid if pid > 0 => unsafe {
                        let mut status = 0;
                        libc::waitpid(pid, &mut status, 0);
                        if status != 0 {
                            eprintln!("child {i} could not join its cgroup");
                            std::process::exit(1);
                        }
                    },
                    _ => std::process::exit(1),
                }
            }
        }
        Some("exit") => std::process::exit(arg(&args, 2) as i32),
        Some("segv") => {
            let core = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: plain setrlimit, then a deliberate write through a null pointer.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &core);
                std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1);
            }
        }
        Some("alloc") => {
            let mut chunks = Vec::new();
            for _ in 0..arg(&args, 2) {
                // Touch every page so the memory is really charged.
                chunks.push(vec![1u8; 1 << 20]);
            }
            println!("allocated {} MiB", chunks.len());
        }
        Some("announce") => {
            // Tells the benchmark it runs (its pid, to the datagram socket named), then
            // waits like `pause`.
            let sock = std::os::unix::net::UnixDatagram::unbound().expect("socket");
            let path = args.get(2).expect("announce SOCKET");
            sock.send_to(std::process::id().to_string().as_bytes(), path)
                .expect("announce");
            loop {
                // SAFETY: waits for a signal.
                unsafe { libc::pause() };
            }
        }
        Some("reads") => {
            // A latency-critical service's work: CPU-bound read(2)s of MB from /dev/zero,
            // back to back, each timed around the syscall (the ground truth of the
            // noisy-neighbour benchmark), printed in ns.
            let mut zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
            let mut buf = vec![0u8; (arg(&args, 3) as usize) << 20];
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..arg(&args, 2) {
                let start = std::time::Instant::now();
                zero.read_exact(&mut buf).expect("read /dev/zero");
                let _ = writeln!(out, "{}", start.elapsed().as_nanos());
            }
        }
        Some("write-then-block") => {
            // Progress, then a hang: COUNT write(2)s to /dev/null, MS apart; then the unix
            // time in ms on stdout (the last write), then a futex wait that never returns.
            let null = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .expect("/dev/null");
            let ms = arg(&args, 3);
            for _ in 0..arg(&args, 2) {
                (&null).write_all(b"x").expect("write /dev/null");
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            println!("{now}");
            let word = 0u32;
            loop {
                // SAFETY: waits while `word` is 0, which nothing changes.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        &word as *const u32,
                        libc::FUTEX_WAIT,
                        0,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
            }
        }
        Some("pause") => loop {
            // SAFETY: waits for a signal.
            unsafe { libc::pause() };
        },
        Some("forks") => {
            let n = arg(&args, 2);
            let mut forked = 0;
            for _ in 0..n {
                // SAFETY: the child only calls _exit.
                match unsafe { libc::fork() } {
                    // SAFETY: _exit is async-signal-safe.
                    0 => unsafe { libc::_exit(0) },
                    pid if pid > 0 => {
                        forked += 1;
                        // SAFETY: reaps our own child; no status is wanted.
                        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    }
                    _ => break,
                }
            }
            println!("{forked}");
        }
        Some("tcp-server") => {
            let listener = TcpListener::bind(&args[2]).expect("bind");
            println!("listening");
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            println!("{total}");
        }
        Some("http-server") => {
            // A backend for the load-balancer tests: answers every request `200 ok`, one
            // connection at a time, forever.
            let listener = TcpListener::bind(&args[2]).expect("bind");
            println!("listening");
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.is_empty() {
                    let _ = s.write_all(
                        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    );
                }
            }
        }
        Some("tcp-client") => {
            let mut s = TcpStream::connect(&args[2]).expect("connect");
            let bytes = arg(&args, 3);
            let buf = vec![7u8; 1 << 16];
            let mut sent = 0;
            while sent < bytes {
                let n = (bytes - sent).min(buf.len() as u64) as usize;
                s.write_all(&buf[..n]).expect("write");
                sent += n as u64;
            }
            s.shutdown(std::net::Shutdown::Write).ok();
            let _ = s.read(&mut [0u8; 1]);
            println!("{sent}");
        }
        _ => {
            eprintln!("usage: gimbal-workload getppid N | sleep COUNT MS | exit CODE | segv | alloc MB | pause | forks N | tcp-server ADDR | tcp-client ADDR BYTES | spin N | announce SOCKET");
            std::process::exit(64);
        }
    }
}
