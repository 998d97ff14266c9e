//! Property-style tests: many generated spellings of every governed route must classify exactly
//! like the plain spelling, and the same spellings with an encoding trick must be refused.
//!
//! The generator is a fixed-seed xorshift, so a failure names a reproducible spelling. Each run
//! covers, per route and version: random case per character, random percent-encoding (of
//! letters, digits, `.`, quotes, parentheses, `=` and `@`), every key form (`/k`, `('k')`,
//! `(k)`, `(tenantId='k')`, `(@a)` and `(tenantId=@a)` with the alias in the query), namespace
//! prefixes, a trailing slash, and unrelated query options.

use super::tests::{GOVERNED_ROUTES, K, fill, method, run};
use super::*;

/// Spellings generated per route and version.
const SPELLINGS: usize = 300;

/// xorshift64*: small, deterministic, good enough to pick spellings.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub(super) fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len())]
    }
}

fn random_case(rng: &mut Rng, text: &str) -> String {
    text.chars()
        .map(|c| {
            if rng.one_in(2) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Percent-encode about one character in four (ASCII only), with random hex case.
fn random_encoding(rng: &mut Rng, text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && rng.one_in(4) {
                let hex = format!("%{:02X}", c as u32);
                if rng.one_in(2) {
                    hex.to_ascii_lowercase()
                } else {
                    hex
                }
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A random spelling of `template`: its segments (without the leading slash) and its query.
fn spell(rng: &mut Rng, template: &str, version: &str) -> (Vec<String>, Option<String>) {
    let mut segments: Vec<String> = Vec::new();
    let mut query: Vec<String> = Vec::new();
    for (n, part) in template.split('/').skip(1).enumerate() {
        match part {
            "{v}" => segments.push(random_case(rng, version)),
            "{k}" => {
                let key = random_case(rng, K);
                let quoted = if rng.one_in(3) {
                    key.clone()
                } else {
                    format!("'{key}'")
                };
                let alias = format!("@a{n}");
                let name = random_case(rng, "tenantId");
                let form = rng.below(6);
                let inner = match form {
                    0 => None,
                    1 => Some(format!("'{key}'")),
                    2 => Some(key.clone()),
                    3 => Some(format!("{name}='{key}'")),
                    4 => Some(alias.clone()),
                    _ => Some(format!("{name}={alias}")),
                };
                if form >= 4 {
                    query.push(format!(
                        "{}={}",
                        random_encoding(rng, &alias),
                        random_encoding(rng, &quoted)
                    ));
                }
                match inner {
                    None => segments.push(key),
                    Some(inner) => {
                        let collection = segments.pop().unwrap_or_default();
                        segments.push(format!("{collection}({inner})"));
                    }
                }
            }
            name => {
                let spelled = random_case(rng, name);
                let action = matches!(name, "restore" | "resetToDefaultSettings");
                let qualified = if action && rng.one_in(2) || rng.one_in(10) {
                    let prefix = rng.pick(&["microsoft.graph.", "graph."]);
                    format!("{}{spelled}", random_case(rng, prefix))
                } else {
                    spelled
                };
                segments.push(qualified);
            }
        }
    }
    let segments: Vec<String> = segments
        .into_iter()
        .map(|s| random_encoding(rng, &s))
        .collect();
    if rng.one_in(3) {
        query.push(random_encoding(rng, "$select=tenantId"));
    }
    let query = (!query.is_empty()).then(|| {
        let len = query.len();
        for i in (1..len).rev() {
            query.swap(i, rng.below(i + 1));
        }
        query.join("&")
    });
    (segments, query)
}

fn target(segments: &[String], query: &Option<String>, trailing_slash: bool) -> String {
    let mut path = format!("/{}", segments.join("/"));
    if trailing_slash {
        path.push('/');
    }
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

#[test]
fn generated_alias_spellings_of_governed_routes_classify_like_the_plain_spelling() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (m, template, _, _, _, versions) in GOVERNED_ROUTES {
        for version in *versions {
            let plain = run(m, &fill(template, version, K));
            assert!(matches!(plain, Classification::Governed(_)), "{template}");
            for _ in 0..SPELLINGS {
                let (segments, query) = spell(&mut rng, template, version);
                let spelled = target(&segments, &query, rng.one_in(3));
                assert_eq!(run(m, &spelled), plain, "{m} {spelled}");
            }
        }
    }
}

/// One encoding trick applied to a spelling, at a random place.
fn with_trick(rng: &mut Rng, segments: &[String]) -> Vec<String> {
    let mut out = segments.to_vec();
    let at = 1 + rng.below(out.len());
    match rng.below(6) {
        // At the very end one empty segment is a (permitted) trailing slash; two are a `//`.
        0 if at == out.len() => out.extend([String::new(), String::new()]),
        0 => out.insert(at, String::new()),
        1 => out.insert(at, rng.pick(&[".", "%2e", "%2E"]).to_owned()),
        2 => {
            out.insert(at, rng.pick(&["..", "%2e%2e", ".%2E"]).to_owned());
            out.insert(at, "x".to_owned());
        }
        3 if at < out.len() => {
            let separator = rng.pick(&["%2F", "%2f", "%5C", "\\"]);
            let joined = format!("{}{separator}{}", out[at - 1], out[at]);
            out.splice(at - 1..=at, [joined]);
        }
        4 => {
            // Whitespace, a control or an invisible character, as sent or encoded, inside a
            // segment: a reader that trims or deletes it sees the governed name.
            let inserted = rng.pick(&[
                " ",
                "\t",
                "\r",
                "\n",
                "\u{a0}",
                "\u{200b}",
                "%20",
                "%09",
                "%0A",
                "%0d",
                "%00",
                "%A0",
                "%C2%A0",
                "%E2%80%8B",
                "%E3%80%80",
                "%7F",
            ]);
            let i = at - 1;
            let cut = rng.below(out[i].len() + 1);
            let cut = (0..=cut)
                .rev()
                .find(|&c| out[i].is_char_boundary(c))
                .unwrap_or(0);
            out[i].insert_str(cut, inserted);
        }
        _ => {
            // Double-encode one character that is not already part of an escape.
            let i = at - 1;
            let chars: Vec<char> = out[i].chars().collect();
            let plain: Vec<usize> = (0..chars.len())
                .filter(|&j| {
                    chars[j].is_ascii_alphanumeric()
                        && (j < 1 || chars[j - 1] != '%')
                        && (j < 2 || chars[j - 2] != '%')
                })
                .collect();
            if plain.is_empty() {
                out.insert(at, String::new());
                out.insert(at, String::new());
                return out;
            }
            let j = plain[rng.below(plain.len())];
            let mut segment: String = chars[..j].iter().collect();
            segment.push_str(&format!("%25{:02X}", chars[j] as u32));
            segment.extend(&chars[j + 1..]);
            out[i] = segment;
        }
    }
    out
}

#[test]
fn generated_spellings_with_an_encoding_trick_are_refused_never_forwarded() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for (m, template, _, _, _, versions) in GOVERNED_ROUTES {
        for version in *versions {
            for _ in 0..SPELLINGS {
                let (segments, query) = spell(&mut rng, template, version);
                let tricked = with_trick(&mut rng, &segments);
                let spelled = target(&tricked, &query, false);
                for m in [*m, "GET"] {
                    match run(m, &spelled) {
                        Classification::Refuse(r) => assert!(
                            [codes::NON_CANONICAL_PATH, codes::NON_CANONICAL_URL].contains(&r.code),
                            "{m} {spelled}: {r}"
                        ),
                        other => panic!("{m} {spelled}: expected a refusal, got {other:?}"),
                    }
                }
            }
        }
    }
}

/// Pieces random paths are made of: governed names, keys, separators and encoding debris.
pub(super) const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    "v1.0",
    "BETA",
    "policies",
    "crossTenantAccessPolicy",
    "deletedItems",
    "crossTenantPartners",
    "crossTenantSyncPolicyPartners",
    "partners",
    K,
    "identitySynchronization",
    "templates",
    "multiTenantOrganizationIdentitySynchronization",
    "restore",
    "microsoft.graph.",
    "$batch",
    "%24",
    "%2F",
    "%25",
    "%2e",
    ".",
    "..",
    "\\",
    "(",
    ")",
    "'",
    "@a",
    "=",
    "tenantId",
    "%C0%AE",
    "%C0",
    "%ff",
    "%u0070",
    ";",
    " ",
    "%20",
    "$count",
    "$ref",
    "default",
    "users",
    "\t",
    "\r\n",
    "%09",
    "%0A",
    "\u{a0}",
    "%C2%A0",
    "%A0",
    "\u{200b}",
    "%E2%80%8B",
    "\u{ff50}",
    "%EF%BC%84",
    "x:",
    "https:",
];

#[test]
fn mutated_paths_never_panic_and_governed_results_are_fixed_points() {
    mutation_run(0x0123_4567_89AB_CDEF, 20_000);
}

/// The same property at length: `cargo test --lib classify -- --ignored`.
#[test]
#[ignore = "a long soak of the mutation property; run on demand"]
fn mutated_paths_soak() {
    for seed in 1..=8_u64 {
        mutation_run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 200_000);
    }
}

fn mutation_run(seed: u64, rounds: usize) {
    let mut rng = Rng(seed);
    let methods = ["GET", "PUT", "PATCH", "DELETE", "POST"];
    let (mut governed, mut refused) = (0, 0);
    for _ in 0..rounds {
        // A governed route, then up to three random insertions or deletions of pieces.
        let (_, template, _, _, _, versions) = GOVERNED_ROUTES[rng.below(GOVERNED_ROUTES.len())];
        let mut path: Vec<char> = fill(template, rng.pick(versions), K).chars().collect();
        for _ in 0..rng.below(4) {
            let at = 1 + rng.below(path.len());
            if rng.one_in(3) && at < path.len() {
                let end = (at + 1 + rng.below(6)).min(path.len());
                path.drain(at..end);
            } else {
                let piece: Vec<char> = rng.pick(PIECES).chars().collect();
                path.splice(at..at, piece);
            }
        }
        let path: String = path.into_iter().collect();
        let query = rng.pick(&["", "@a='9c5d131d-b1c3-4fc4-9e3f-c6557947d551'", "$expand=*"]);
        let target = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        let m = rng.pick(&methods);
        match run(m, &target) {
            Classification::Governed(g) => {
                governed += 1;
                let again = run(m, &g.path.to_string());
                assert_eq!(again, Classification::Governed(g), "{m} {target}");
            }
            Classification::Refuse(_) => refused += 1,
            Classification::Forward if m != "GET" => {
                // An independent, naive oracle: a forwarded write must not plainly decode to a
                // governed subtree (except the documented ungoverned rows of the route table).
                let mut plain = path.replace('\\', "/");
                for _ in 0..4 {
                    plain = percent_encoding::percent_decode_str(&plain)
                        .decode_utf8_lossy()
                        .to_ascii_lowercase();
                }
                let governed_subtree = (plain.starts_with("/v1.0/policies/")
                    || plain.starts_with("/beta/policies/"))
                    && (plain.contains("crosstenant") || plain.contains("deleteditems"));
                let ungoverned_row = plain.contains("/default");
                assert!(
                    !governed_subtree || ungoverned_row,
                    "{m} {target} was forwarded"
                );
            }
            _ => {}
        }
    }
    assert!(
        governed > rounds / 20 && refused > rounds / 20,
        "{governed} governed, {refused} refused"
    );
}

#[test]
fn the_generator_really_produces_varied_spellings() {
    let mut rng = Rng(1);
    let template = "/{v}/policies/deletedItems/crossTenantPartners/{k}/restore";
    let spellings: std::collections::HashSet<String> = (0..100)
        .map(|_| {
            let (segments, query) = spell(&mut rng, template, "beta");
            target(&segments, &query, false)
        })
        .collect();
    assert!(spellings.len() > 95);
    assert!(spellings.iter().any(|s| s.contains("%")));
    assert!(
        spellings
            .iter()
            .any(|s| s.contains("(@a") || s.contains("%40a"))
    );
    assert!(
        spellings
            .iter()
            .any(|s| s.to_ascii_lowercase().contains("graph."))
    );
    assert_eq!(method("POST"), Method::POST);
}
