//! A throw-away PKI for tests of TLS connections: a CA, a server
//! certificate for 127.0.0.1 / localhost, and a client certificate, all made
//! with the `openssl` command (Debian: `openssl`; `scripts/setup.sh`
//! installs it), as PEM files in a directory the caller owns.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The PEM files of a test PKI.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate whose common name is `client_name`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_name: String,
}

/// The files a plane serves TLS with in a test, and the CA its clients
/// trust.
#[derive(Debug, Clone)]
pub struct ServedTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl TestPki {
    /// This PKI's server certificate (127.0.0.1, localhost) and key,
    /// trusted through its CA.
    pub fn served(&self) -> ServedTls {
        ServedTls {
            cert_file: self.server_cert.clone(),
            key_file: self.server_key.clone(),
            ca_file: self.ca.clone(),
        }
    }

    /// Creates the CA and both certificates in `dir` (valid for a day).
    pub fn create(dir: &Path, client_name: &str) -> Result<Self> {
        let p = |name: &str| dir.join(name);
        let pki = Self {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            client_name: client_name.to_owned(),
        };
        let ca_key = p("ca.key");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=memtrace test ca",
            "-keyout",
            path(&ca_key)?,
            "-out",
            path(&pki.ca)?,
        ])?;
        pki.issue(
            dir,
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
            &ca_key,
        )?;
        pki.issue(
            dir,
            "client",
            &format!("/CN={client_name}"),
            "extendedKeyUsage=clientAuth\n",
            &ca_key,
        )?;
        Ok(pki)
    }

    fn issue(&self, dir: &Path, name: &str, subject: &str, ext: &str, ca_key: &Path) -> Result<()> {
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let cert = dir.join(format!("{name}.pem"));
        let ext_file = dir.join(format!("{name}.ext"));
        std::fs::write(&ext_file, ext).context("writing the extensions file")?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            path(&key)?,
            "-out",
            path(&csr)?,
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr)?,
            "-CA",
            path(&self.ca)?,
            "-CAkey",
            path(ca_key)?,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            path(&ext_file)?,
            "-out",
            path(&cert)?,
        ])
    }
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("a UTF-8 path")
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (install it with: apt-get install -y openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
