//! The strict URL reader: tables of URLs it reads (and how) and URLs it refuses (and why).

use super::*;

const TAIL: &str = "/policies/crossTenantAccessPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitySynchronization";

#[test]
fn relative_and_graph_host_urls_are_read_to_their_path_and_query() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/me", "/me", None),
        ("users?$select=id", "users", Some("$select=id")),
        (
            "users?$select=id,displayName&$filter=city eq null&$count=true",
            "users",
            Some("$select=id,displayName&$filter=city%20eq%20null&$count=true"),
        ),
        (
            "/users?$search=\"displayName:wa\"",
            "/users",
            Some("$search=%22displayName:wa%22"),
        ),
        (
            "/me?$select=displayName ",
            "/me",
            Some("$select=displayName%20"),
        ),
        (
            "/users?$filter=displayName%20eq%20'caf%C3%A9'",
            "/users",
            Some("$filter=displayName%20eq%20'caf%C3%A9'"),
        ),
        (
            "/me/drive/root:/a.txt:/content",
            "/me/drive/root:/a.txt:/content",
            None,
        ),
        ("https://graph.microsoft.com/v1.0/me", "/v1.0/me", None),
        ("HTTPS://GRAPH.MICROSOFT.COM/beta/me", "/beta/me", None),
        (
            "https://graph.microsoft.com:443/v1.0/me?x=1",
            "/v1.0/me",
            Some("x=1"),
        ),
        ("https://graph.microsoft.us/v1.0/me", "/v1.0/me", None),
        ("https://dod-graph.microsoft.us/v1.0/me", "/v1.0/me", None),
        (
            "https://microsoftgraph.chinacloudapi.cn/v1.0/me",
            "/v1.0/me",
            None,
        ),
        ("http://localhost:8080/v1.0/me", "/v1.0/me", None),
        ("http://127.0.0.1:1/v1.0/me", "/v1.0/me", None),
        ("http://[::1]:9/v1.0/me", "/v1.0/me", None),
        ("https://graph.microsoft.com", "", None),
        ("/users('a%27b')", "/users('a%27b')", None),
        ("/me/drive/items/{id}", "/me/drive/items/{id}", None),
    ];
    for (url, path, query) in cases {
        let (p, q) = read_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(p, *path, "{url}");
        assert_eq!(q.as_deref(), *query, "{url}");
        let target = match &q {
            Some(q) => format!("/x{p}?{q}"),
            None => format!("/x{p}"),
        };
        assert!(
            http::uri::PathAndQuery::try_from(target.as_str()).is_ok(),
            "{url}: what syncgate reads, it can send: {target}"
        );
    }
}

#[test]
fn every_url_the_issue_names_and_its_class_is_refused() {
    let refused: Vec<(String, UrlProblem)> = vec![
        // Schemes without `//`, one-slash schemes, unknown schemes (issue 7).
        (format!("x:/v1.0{TAIL}"), UrlProblem::Scheme("x".into())),
        (
            format!("https:v1.0{TAIL}"),
            UrlProblem::Scheme("https".into()),
        ),
        (
            format!("https:/v1.0{TAIL}"),
            UrlProblem::Scheme("https".into()),
        ),
        (
            format!("http:/v1.0{TAIL}"),
            UrlProblem::Scheme("http".into()),
        ),
        (
            format!("ftp://graph.microsoft.com/v1.0{TAIL}"),
            UrlProblem::Scheme("ftp".into()),
        ),
        (format!("users:{TAIL}"), UrlProblem::Scheme("users".into())),
        (
            format!("javascript:{TAIL}"),
            UrlProblem::Scheme("javascript".into()),
        ),
        // Hosts syncgate does not know, user info, trailing dots.
        (
            format!("https://evil.example/v1.0{TAIL}"),
            UrlProblem::Host("evil.example".into()),
        ),
        (
            format!("https://graph.microsoft.com@evil/v1.0{TAIL}"),
            UrlProblem::Host("graph.microsoft.com@evil".into()),
        ),
        (
            format!("https://graph.microsoft.com./v1.0{TAIL}"),
            UrlProblem::Host("graph.microsoft.com.".into()),
        ),
        (
            format!("https://graph.microsoft.com:x/v1.0{TAIL}"),
            UrlProblem::Host("graph.microsoft.com:x".into()),
        ),
        (
            format!("https://graph%2Emicrosoft.com/v1.0{TAIL}"),
            UrlProblem::Host("graph%2Emicrosoft.com".into()),
        ),
        (
            format!("//graph.microsoft.com/v1.0{TAIL}"),
            UrlProblem::SchemeRelative,
        ),
        // A leading space, TAB/CR/LF inside a segment or the version, NBSP, other whitespace.
        (format!(" {TAIL}"), UrlProblem::Raw(Part::Path, ' ')),
        (format!("{TAIL} "), UrlProblem::Raw(Part::Path, ' ')),
        (format!("\t{TAIL}"), UrlProblem::Raw(Part::Path, '\t')),
        ("/v1.\t0/policies".into(), UrlProblem::Raw(Part::Path, '\t')),
        (
            "/policies/crossTenant\rAccessPolicy".into(),
            UrlProblem::Raw(Part::Path, '\r'),
        ),
        (
            "/policies/crossTenant\nAccessPolicy".into(),
            UrlProblem::Raw(Part::Path, '\n'),
        ),
        (
            "\u{a0}/policies".into(),
            UrlProblem::Raw(Part::Path, '\u{a0}'),
        ),
        (
            "/policies\u{2003}".into(),
            UrlProblem::Raw(Part::Path, '\u{2003}'),
        ),
        (
            "/pol\u{200b}icies".into(),
            UrlProblem::Raw(Part::Path, '\u{200b}'),
        ),
        (
            "/\u{ff50}olicies".into(),
            UrlProblem::Raw(Part::Path, '\u{ff50}'),
        ),
        (
            "/users/caf\u{e9}".into(),
            UrlProblem::Raw(Part::Path, '\u{e9}'),
        ),
        ("/\0policies".into(), UrlProblem::Raw(Part::Path, '\0')),
        // Encoded whitespace, controls, backslash, non-ASCII in the path.
        (
            "/v1.0%09/policies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x09".into()),
        ),
        (
            "/pol%0Aicies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x0A".into()),
        ),
        (
            "/pol%0dicies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x0D".into()),
        ),
        (
            "/%20policies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x20".into()),
        ),
        (
            "/%A0policies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0xA0".into()),
        ),
        (
            "/%C2%A0policies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0xC2".into()),
        ),
        (
            "/users/caf%C3%A9".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0xC3".into()),
        ),
        // Strict everywhere: even an ordinary path with an encoded space (module doc).
        (
            "/me/drive/root:/a%20b.txt:/content".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x20".into()),
        ),
        (
            "/users%5C..%5Cpolicies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x5C".into()),
        ),
        (
            "/policies%3F/x".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x3F".into()),
        ),
        (
            "/policies%23/x".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x23".into()),
        ),
        (
            "/%7Fpolicies".into(),
            UrlProblem::Encoded(Part::Path, "the byte 0x7F".into()),
        ),
        // Backslashes, malformed escapes, characters http::Uri refuses, fragments.
        ("\\policies".into(), UrlProblem::Raw(Part::Path, '\\')),
        (
            "/users\\..\\policies".into(),
            UrlProblem::Raw(Part::Path, '\\'),
        ),
        ("/%u0070olicies".into(), UrlProblem::BadEscape(Part::Path)),
        ("/policies%".into(), UrlProblem::BadEscape(Part::Path)),
        ("/policies%2".into(), UrlProblem::BadEscape(Part::Path)),
        ("/a<b".into(), UrlProblem::Raw(Part::Path, '<')),
        ("/a`b".into(), UrlProblem::Raw(Part::Path, '`')),
        ("/users#/../policies".into(), UrlProblem::Fragment),
        // The query: controls and whitespace other than the space, as sent or encoded.
        ("/me?x=\ty".into(), UrlProblem::Raw(Part::Query, '\t')),
        (
            "/me?x=\u{a0}".into(),
            UrlProblem::Raw(Part::Query, '\u{a0}'),
        ),
        (
            "/me?x=caf\u{e9}".into(),
            UrlProblem::Raw(Part::Query, '\u{e9}'),
        ),
        ("/me?x=a\\b".into(), UrlProblem::Raw(Part::Query, '\\')),
        (
            "/me?x=%09".into(),
            UrlProblem::Encoded(Part::Query, "U+0009".into()),
        ),
        (
            "/me?%0D%0Ax-http-method-override=DELETE".into(),
            UrlProblem::Encoded(Part::Query, "U+000D".into()),
        ),
        (
            "/me?x=%C2%A0".into(),
            UrlProblem::Encoded(Part::Query, "U+00A0".into()),
        ),
        (
            "/me?x=%E2%80%8B".into(),
            UrlProblem::Encoded(Part::Query, "U+200B".into()),
        ),
        (
            "/me?x=%C2%85".into(),
            UrlProblem::Encoded(Part::Query, "U+0085".into()),
        ),
        ("/me?x=%A0".into(), UrlProblem::NotUtf8),
        ("/me?x=%zz".into(), UrlProblem::BadEscape(Part::Query)),
    ];
    for (url, problem) in refused {
        assert_eq!(read_url(&url), Err(problem), "{url:?}");
    }
}

#[test]
fn the_path_and_query_checks_alone_apply_the_same_rules_to_request_targets() {
    for ok in [
        "/v1.0/policies/crossTenantAccessPolicy",
        "/v1.0/users/abc%2Fdef",
        "/v1.0/$batch",
    ] {
        assert_eq!(check_path(ok), Ok(()), "{ok}");
    }
    for bad in [
        "/v1.0/%20$batch",
        "/v1.0/pol%09icies",
        "/v1.0/policies\\x",
        "/v1.0/p%C3%B6licies",
    ] {
        assert!(check_path(bad).is_err(), "{bad}");
    }
    assert_eq!(
        check_query("$expand=identitySynchronization&$filter=a%20eq%20'b'"),
        Ok(())
    );
    assert!(check_query("$expand%0A=identitySynchronization").is_err());
}

#[test]
fn problems_quote_a_bounded_amount_of_what_was_sent() {
    let long = format!("{}:/x", "a".repeat(10_000));
    let problem = read_url(&long).expect_err("refused");
    assert!(problem.to_string().len() < 200, "{problem}");
    assert!(
        UrlProblem::Raw(Part::Path, '\t')
            .to_string()
            .contains("U+0009"),
        "invisible characters are named by code point"
    );
}
