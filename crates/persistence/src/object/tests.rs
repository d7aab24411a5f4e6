//! The object-store backend's offline unit tests (no server contacted).

use super::*;

fn offline(url: &str) -> ObjStore {
    ObjStore::open(
        url,
        ObjOptions {
            timeout: Duration::from_secs(1),
            use_env: false,
            config: vec![
                ("aws_endpoint".into(), "http://127.0.0.1:9".into()),
                ("aws_allow_http".into(), "true".into()),
                ("aws_access_key_id".into(), "k".into()),
                ("aws_secret_access_key".into(), "s".into()),
                ("aws_region".into(), "us-east-1".into()),
            ],
        },
    )
    .unwrap()
}

#[test]
fn urls_are_recognised() {
    for u in ["s3://b/p", "S3A://b", "gs://b/p", "az://c/p", "azure://c"] {
        assert!(is_object_url(u), "{u}");
    }
    for u in ["/srv/x", "file:///srv/x", "http://x/y", "s3:/b"] {
        assert!(!is_object_url(u), "{u}");
    }
}

#[test]
fn keys_map_to_objects_under_the_prefix() {
    let s = offline("s3://bucket/some/prefix/");
    assert_eq!(s.describe(), "s3://bucket/some/prefix/");
    assert_eq!(
        s.path(LEASE_KEY).unwrap().as_ref(),
        "some/prefix/lease.json"
    );
    assert_eq!(
        s.path("nodes/a.json").unwrap().as_ref(),
        "some/prefix/nodes/a.json"
    );
    assert!(matches!(
        s.path("lease.json"),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(s.path("../x"), Err(StoreError::InvalidKey(_))));
    assert_eq!(
        s.key_of(&Path::from("some/prefix/lease.json")).as_deref(),
        Some(LEASE_KEY)
    );
    assert_eq!(
        s.key_of(&Path::from("some/prefix/nodes/a.json")).as_deref(),
        Some("nodes/a.json")
    );
    assert_eq!(s.key_of(&Path::from("some/prefixes/x.json")), None);
    assert_eq!(s.key_of(&Path::from("other/x.json")), None);
    let root = offline("s3://bucket");
    assert_eq!(root.path(LEASE_KEY).unwrap().as_ref(), "lease.json");
    assert_eq!(
        root.key_of(&Path::from("cluster.json")).as_deref(),
        Some("cluster.json")
    );
}

#[test]
fn versions_round_trip_through_preconditions() {
    let s = offline("s3://b/p");
    let v = s
        .version_of("k", Some("\"abc\"".into()), Some("v1".into()))
        .unwrap();
    assert_eq!(
        s.update_version(&v),
        Some(UpdateVersion {
            e_tag: Some("\"abc\"".into()),
            version: Some("v1".into())
        })
    );
    let v = s.version_of("k", Some("\"abc\"".into()), None).unwrap();
    assert_eq!(
        s.update_version(&v).unwrap().e_tag.as_deref(),
        Some("\"abc\"")
    );
    assert!(s.version_of("k", None, None).is_err());
    assert_eq!(s.update_version(&Version("a\nb".into())), None);
    assert_eq!(s.update_version(&Version(String::new())), None);
}

#[test]
fn gcs_and_azure_urls_open_without_contacting_anyone() {
    let gs = ObjStore::open(
        "gs://bucket/ha",
        ObjOptions {
            use_env: false,
            config: vec![("google_bearer_token".into(), "token".into())],
            ..ObjOptions::default()
        },
    )
    .unwrap();
    assert_eq!(gs.path(LEASE_KEY).unwrap().as_ref(), "ha/lease.json");
    // GCS conditions on the generation: a version without one cannot match.
    assert_eq!(gs.update_version(&Version("\"etag\"".into())), None);
    let v = gs
        .version_of("k", Some("e".into()), Some("17".into()))
        .unwrap();
    assert_eq!(
        gs.update_version(&v).unwrap().version.as_deref(),
        Some("17")
    );

    let az = ObjStore::open(
        "az://container/ha",
        ObjOptions {
            use_env: false,
            config: vec![
                ("azure_storage_account_name".into(), "account".into()),
                ("azure_storage_account_key".into(), "a2V5".into()),
            ],
            ..ObjOptions::default()
        },
    )
    .unwrap();
    assert_eq!(az.describe(), "az://container/ha");
    let e = ObjStore::open(
        "az://container/ha",
        ObjOptions {
            use_env: false,
            ..ObjOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
}

#[test]
fn bad_urls_name_the_fix() {
    let e = ObjStore::open("s3://", ObjOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no bucket named"), "{e}");
    let e = ObjStore::open("az:///x", ObjOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no container named"), "{e}");
    let e = ObjStore::open("s3://b/a/../c", ObjOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid object path"), "{e}");
    let e = ObjStore::open("/srv/x", ObjOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("s3://bucket/prefix"), "{e}");
}

#[test]
fn a_custom_endpoint_without_credentials_is_refused_before_any_request() {
    let e = ObjStore::open(
        "s3://b/p",
        ObjOptions {
            use_env: false,
            config: vec![("aws_endpoint".into(), "http://127.0.0.1:9".into())],
            ..ObjOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("AWS_ACCESS_KEY_ID")
            && e.contains("http://127.0.0.1:9")
            && e.contains("s3://b/p"),
        "{e}"
    );
}

#[test]
fn a_refused_connection_is_unavailable_not_a_panic() {
    // Port 9 (discard) is closed on loopback here: connection refused.
    let s = offline("s3://b/p");
    for r in [
        s.read("nodes/a.json").map(|_| ()),
        s.put("nodes/a.json", b"x").map(|_| ()),
        s.create("epochs/1.json", b"x").map(|_| ()),
        s.replace(LEASE_KEY, b"x", &Version("\"e\"".into()))
            .map(|_| ()),
        s.list("nodes/").map(|_| ()),
        s.delete("nodes/a.json"),
    ] {
        assert!(
            matches!(
                r,
                Err(StoreError::Unavailable(_)) | Err(StoreError::Timeout(_))
            ),
            "{r:?}"
        );
    }
    assert!(matches!(
        s.delete(LEASE_KEY),
        Err(StoreError::InvalidKey(_))
    ));
}

/// Settings that object_store accepts but that fail only at the first request (or hang
/// there) are refused at open, naming the fix.
#[test]
fn plain_http_and_unsigned_gcs_are_refused_at_open_naming_the_fix() {
    let open = |url: &str, config: &[(&str, &str)]| {
        ObjStore::open(
            url,
            ObjOptions {
                use_env: false,
                config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..ObjOptions::default()
            },
        )
    };
    let s3 = [
        ("aws_endpoint", "http://127.0.0.1:9"),
        ("aws_access_key_id", "k"),
        ("aws_secret_access_key", "s"),
        ("aws_region", "us-east-1"),
    ];
    let e = open("s3://b/p", &s3).unwrap_err().to_string();
    assert!(
        e.contains("http://127.0.0.1:9 is plain HTTP") && e.contains("set AWS_ALLOW_HTTP=true"),
        "{e}"
    );
    let mut allowed = s3.to_vec();
    allowed.push(("aws_allow_http", "true"));
    open("s3://b/p", &allowed).unwrap();
    let mut https = s3.to_vec();
    https[0] = ("aws_endpoint", "https://127.0.0.1:9");
    open("s3://b/p", &https).unwrap();

    let az = [
        ("azure_storage_account_name", "account"),
        ("azure_storage_account_key", "a2V5"),
        ("azure_storage_endpoint", "http://127.0.0.1:10000/account"),
    ];
    let e = open("az://c/p", &az).unwrap_err().to_string();
    assert!(e.contains("set AZURE_ALLOW_HTTP=true"), "{e}");
    let mut allowed = az.to_vec();
    allowed.push(("azure_allow_http", "true"));
    open("az://c/p", &allowed).unwrap();
    // Azurite, the emulator: plain HTTP allowed by object_store itself.
    open("az://c/p", &[("azure_storage_use_emulator", "true")]).unwrap();

    let e = open("gs://b/p", &[("google_skip_signature", "true")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GOOGLE_SKIP_SIGNATURE=true without credentials") && e.contains("unset"),
        "{e}"
    );
    open(
        "gs://b/p",
        &[
            ("google_skip_signature", "true"),
            ("google_bearer_token", "t"),
        ],
    )
    .unwrap();
}

#[test]
fn a_multi_line_server_answer_stays_on_one_log_line() {
    let xml = "Server returned 500: <?xml version=\"1.0\"?>\n<Error>\r\n  <Code>InternalError</Code>\n</Error>\n";
    assert_eq!(
        one_line(xml),
        "Server returned 500: <?xml version=\"1.0\"?> <Error> <Code>InternalError</Code> </Error>"
    );
    assert_eq!(one_line("plain message"), "plain message");
    assert_eq!(
        one_line("\nleading and  inner  spaces"),
        "leading and  inner  spaces"
    );
}
