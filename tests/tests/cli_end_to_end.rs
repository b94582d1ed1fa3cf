//! Every memtracectl command end to end against a real control plane
//! process, including error paths, secrets never reaching logs, and the
//! SQLite file never holding a plaintext Arc key or API key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::arc::ArcStandIn;
use memtrace_tests::cli::{Ctl, memtracectl};
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};

const ARC_KEY: &str = "arc-tenant-secret-0123456789abcdef";

#[tokio::test]
async fn full_cli_session_and_no_secret_at_rest_or_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ControlPlaneSpec::default();
    let master_key = spec.master_key.clone();
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let ctl = Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    // instant answers (CostModel::instant): behaviour, not time
    let arc = ArcStandIn::start().await.unwrap();
    let arc_url = arc.url();

    // keygen master is offline and yields a usable key
    let keygen = memtracectl(&["keygen", "master", "--output", "json"], &[])
        .await
        .unwrap();
    assert!(keygen.success, "{keygen:?}");
    let generated = keygen.json().unwrap()["key"].as_str().unwrap().to_owned();
    assert!(memtrace_common::keys::parse_key("k", Some(&generated)).is_ok());

    // org create / list / get
    let org = ctl.json(&["org", "create", "Acme Agents"]).await.unwrap();
    let org_id = org["id"].as_str().unwrap().to_owned();
    assert!(org_id.starts_with("org_") && org_id.len() == 28, "{org}");
    assert_eq!(org["name"], "Acme Agents");
    let dup = ctl.run(&["org", "create", "Acme Agents"]).await.unwrap();
    assert!(
        !dup.success && dup.stderr.contains("already exists"),
        "{dup:?}"
    );
    let list = ctl.json(&["org", "list"]).await.unwrap();
    assert!(
        list["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == org_id.as_str())
    );
    let got = ctl.json(&["org", "get", &org_id]).await.unwrap();
    assert_eq!(got["name"], "Acme Agents");

    // arc binding: add, show (masked), test, replace refused without --replace
    let bound = ctl
        .json(&[
            "org",
            "add-arc",
            &org_id,
            "--url",
            &arc_url,
            "--database",
            "acme",
            "--api-key",
            ARC_KEY,
        ])
        .await
        .unwrap();
    assert_eq!(bound["measurement"], "events");
    let shown = ctl.json(&["org", "show-arc", &org_id]).await.unwrap();
    assert_eq!(shown["api_key_masked"], "arc-***cdef");
    assert_eq!(shown["database"], "acme");
    assert!(!shown.to_string().contains(ARC_KEY));
    let again = ctl
        .run(&[
            "org",
            "add-arc",
            &org_id,
            "--url",
            &arc_url,
            "--database",
            "acme",
        ])
        .await
        .unwrap();
    assert!(
        !again.success && again.stderr.contains("already has an arc binding"),
        "{again:?}"
    );
    let tested = ctl.run(&["org", "test-arc", &org_id]).await.unwrap();
    assert!(tested.success, "{tested:?}");
    let calls = arc.health_calls();
    assert_eq!(calls.len(), 1, "the control plane called /health once");
    assert_eq!(
        calls[0]["authorization"],
        format!("Bearer {ARC_KEY}").as_str()
    );
    assert_eq!(calls[0]["x-arc-database"], "acme");

    // api keys: create (secret once), list (never the secret), revoke
    let key = ctl
        .json(&[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "ci",
            "--scopes",
            "read,write",
            "--expires-in",
            "30d",
        ])
        .await
        .unwrap();
    let secret = key["key"].as_str().unwrap().to_owned();
    let key_id = key["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mtk_"));
    assert!(memtrace_common::credentials::parse_api_key(&secret).is_ok());
    assert_eq!(key["org_id"], org_id.as_str());
    assert_eq!(key["name"], "ci");
    assert_eq!(key["scopes"], serde_json::json!(["read", "write"]));
    assert!(key["expires_at"].is_string(), "{key}");
    let reader = ctl
        .json(&[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "reader",
            "--permissions",
            "read",
        ])
        .await
        .unwrap();
    assert_eq!(reader["scopes"], serde_json::json!(["read"]));
    let reader_secret = reader["key"].as_str().unwrap().to_owned();
    let keys = ctl.json(&["key", "list", "--org", &org_id]).await.unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    let keys_text = ctl.run(&["key", "list", "--org", &org_id]).await.unwrap();
    for output in [keys.to_string(), keys_text.stdout.clone()] {
        assert!(!output.contains(&secret), "list shows a secret");
    }
    let revoked = ctl.json(&["key", "revoke", &key_id]).await.unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let active = ctl.json(&["key", "list", "--org", &org_id]).await.unwrap();
    assert_eq!(active["keys"].as_array().unwrap().len(), 1);
    let all = ctl
        .json(&["key", "list", "--org", &org_id, "--all"])
        .await
        .unwrap();
    assert_eq!(all["keys"].as_array().unwrap().len(), 2);

    // an agent token: printed once, its id audited, the token itself
    // neither logged nor stored (checked with the other secrets below)
    let minted = ctl
        .json(&[
            "token", "create", "--org", &org_id, "--agent", "planner", "--scopes", "write",
        ])
        .await
        .unwrap();
    let agent_token = minted["token"].as_str().unwrap().to_owned();
    assert!(agent_token.starts_with("v4.public."), "{minted}");
    let audit = ctl
        .json(&["audit", "list", "--action", "token.mint"])
        .await
        .unwrap()
        .to_string();
    assert!(
        audit.contains(minted["token_id"].as_str().unwrap()),
        "{audit}"
    );
    assert!(!audit.contains(&agent_token), "{audit}");

    // keyring status counts the sealed arc key, the erasure receipt
    // signing key and the agent-token signing key (both created at start)
    // under the active master key
    let status = ctl.json(&["master-key", "status"]).await.unwrap();
    let text = status.to_string();
    assert!(
        text.contains("\"records\":3") || text.contains("\"records\": 3"),
        "{status}"
    );
    let rotated = ctl.json(&["master-key", "rotate"]).await.unwrap();
    assert_eq!(
        rotated["rewrapped"], 0,
        "nothing to rewrap under one key: {rotated}"
    );

    // remove-arc, then delete cascades to the remaining key
    ctl.json(&["org", "remove-arc", &org_id]).await.unwrap();
    let gone = ctl.run(&["org", "show-arc", &org_id]).await.unwrap();
    assert!(
        !gone.success && gone.stderr.contains("no arc binding"),
        "{gone:?}"
    );
    ctl.json(&[
        "org",
        "add-arc",
        &org_id,
        "--url",
        &arc_url,
        "--database",
        "acme",
        "--api-key",
        ARC_KEY,
    ])
    .await
    .unwrap();
    let deleted = ctl.json(&["org", "delete", &org_id]).await.unwrap();
    assert_eq!(deleted["api_keys_removed"], 2, "{deleted}");
    assert_eq!(deleted["arc_binding_removed"], true, "{deleted}");
    let missing = ctl.run(&["org", "get", &org_id]).await.unwrap();
    assert!(
        !missing.success && missing.stderr.contains("not found"),
        "{missing:?}"
    );

    // secrets never reach the log or stdout of the control plane
    let logs = cp.logs();
    let stdout = std::fs::read_to_string(&cp.stdout_path).unwrap();
    assert!(logs.contains("api key created"), "the log was captured");
    for (what, secret) in [
        ("master key", master_key.as_str()),
        ("arc api key", ARC_KEY),
        ("api key", secret.as_str()),
        ("api key", reader_secret.as_str()),
        ("agent token", agent_token.as_str()),
    ] {
        assert!(
            !logs.contains(secret),
            "{what} found in the control plane log"
        );
        assert!(
            !stdout.contains(secret),
            "{what} found on the control plane stdout"
        );
    }

    // nothing secret at rest: scan the database file and its WAL
    let status = cp.stop().await.unwrap();
    assert!(status.success(), "SIGTERM exits cleanly: {status}");
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        scanned += bytes.len();
        for secret in [
            ARC_KEY,
            secret.as_str(),
            reader_secret.as_str(),
            agent_token.as_str(),
            master_key.as_str(),
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "plaintext secret at rest"
            );
        }
    }
    assert!(scanned > 4096, "the database was scanned");
}

#[tokio::test]
async fn cli_errors_are_one_line_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), ControlPlaneSpec::default())
        .await
        .unwrap();
    let server = cp.url();
    let token = cp.admin_token().unwrap();

    // no token
    let out = memtracectl(&["org", "list"], &[("MEMTRACE_CONTROL_PLANE_URL", &server)])
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("MEMTRACE_ADMIN_TOKEN"),
        "{out:?}"
    );

    // wrong token
    let wrong = "mta_wrong_wrong_wrong_wrong_wrong_wrong_wrong";
    let out = memtracectl(&["org", "list", "--server", &server, "--token", wrong], &[])
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("invalid admin token"),
        "{out:?}"
    );

    // a data-plane key is refused on the admin api
    let ctl = Ctl {
        server: server.clone(),
        token: token.clone(),
        ca_file: None,
    };
    let org = ctl.json(&["org", "create", "keys-org"]).await.unwrap();
    let key = ctl
        .json(&[
            "key",
            "create",
            "--org",
            org["id"].as_str().unwrap(),
            "--name",
            "k",
        ])
        .await
        .unwrap();
    let api_key = key["key"].as_str().unwrap();
    let out = memtracectl(
        &["org", "list", "--server", &server, "--token", api_key],
        &[],
    )
    .await
    .unwrap();
    assert!(
        !out.success && out.stderr.to_lowercase().contains("api keys"),
        "{out:?}"
    );

    // bad input names the field
    let out = ctl.run(&["org", "show-arc", "not-an-org"]).await.unwrap();
    assert!(!out.success && out.stderr.contains("org_id"), "{out:?}");
    let out = ctl
        .run(&[
            "org",
            "add-arc",
            org["id"].as_str().unwrap(),
            "--url",
            "ftp://x",
            "--database",
            "d",
        ])
        .await
        .unwrap();
    assert!(!out.success && out.stderr.contains("url"), "{out:?}");
    let out = ctl
        .run(&[
            "key",
            "create",
            "--org",
            org["id"].as_str().unwrap(),
            "--name",
            "x",
            "--scopes",
            "delete",
        ])
        .await
        .unwrap();
    assert!(!out.success && out.stderr.contains("scope"), "{out:?}");
    // nothing was created by the refused calls
    let keys = ctl
        .json(&["key", "list", "--org", org["id"].as_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);

    // unreachable control plane: the address tried and how to set it
    cp.stop().await.unwrap();
    let out = memtracectl(
        &["org", "list", "--server", &server, "--token", &token],
        &[],
    )
    .await
    .unwrap();
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr.contains(&server) && out.stderr.contains("MEMTRACE_CONTROL_PLANE_URL"),
        "{out:?}"
    );
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{out:?}"
    );
}
