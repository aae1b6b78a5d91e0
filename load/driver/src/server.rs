//! The server under test: a child process, stopped on drop.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::probe;

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

/// A port the kernel says is free now.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl Server {
    /// Starts `binary` with `env` (and no other `ADMISSION_*` variable) on a free port of
    /// 127.0.0.1, logging to `log`, and waits until `/health` answers.
    pub fn start(binary: &Path, env: &[(String, String)], log: &Path) -> Result<Self, String> {
        Self::start_in(binary, env, log, None)
    }

    /// [`Server::start`], in the cgroup whose `cgroup.procs` is `procs` from its first
    /// allocation on (a shell joins it, then execs the server).
    pub fn start_in(
        binary: &Path,
        env: &[(String, String)],
        log: &Path,
        procs: Option<&Path>,
    ) -> Result<Self, String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?)
            .parse()
            .expect("an address");
        let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let mut command = match procs {
            None => Command::new(binary),
            Some(procs) => {
                let mut shell = Command::new("sh");
                shell
                    .args(["-c", r#"echo $$ > "$1" && exec "$2""#, "sh"])
                    .args([procs, binary]);
                shell
            }
        };
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("ADMISSION_")) {
            command.env_remove(name);
        }
        // SERVER_LOG sets the servers' RUST_LOG (the CPU gate's windows are at `debug`),
        // unless the setup says otherwise.
        let rust_log = std::env::var("SERVER_LOG").unwrap_or_else(|_| "warn".into());
        // SERVER_ENV="ADMISSION_QUEUE_TARGET=5ms ..." sets variables on every server of a
        // run (to try a setting against the same workload); the setup's own come after.
        let extra = std::env::var("SERVER_ENV").unwrap_or_default();
        let extra = extra
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='));
        command
            .env("RUST_LOG", rust_log)
            .envs(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("LISTEN_ADDR", addr.to_string())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .stdin(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok((200, _)) = probe::get(addr, "/health") {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{} exited with {status}; see {}",
                    binary.display(),
                    log.display()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{} did not answer /health within 15 s",
            binary.display()
        ))
    }

    /// Whether the process has ended (killed by the kernel, say).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a graceful stop), then SIGKILL after 5 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
