//! Test certificates: a CA and a server certificate for 127.0.0.1, made with the `openssl`
//! command, for the engines' TLS tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate for 127.0.0.1, made with the `openssl` command.
#[derive(Debug)]
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// Makes them in a fresh temporary directory, removed on drop. `None` (after saying the
    /// tests are skipped) when the `openssl` command is missing outside CI.
    ///
    /// # Panics
    ///
    /// When `openssl` fails, and in CI (`CI=true`) when it is missing.
    pub fn make() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "cache-tests-tls-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output();
            match out {
                Ok(o) if o.status.success() => true,
                Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
                Err(_) => false,
            }
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("a file in the temporary directory");
        let made = run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cache-tests CA",
        ]) && run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]) && run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        if !made {
            assert!(
                std::env::var("CI").is_err(),
                "the openssl command is needed for the TLS tests"
            );
            eprintln!(
                "*** SKIPPED: the openssl command is missing; install it to run the TLS tests ***"
            );
            return None;
        }
        Some(Self { dir })
    }

    /// The path of one of the files: `ca.crt`, `server.crt`, `server.key`.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The CA certificate, PEM.
    ///
    /// # Panics
    ///
    /// When the file cannot be read.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(Path::new(&self.path("ca.crt"))).expect("the CA certificate")
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
