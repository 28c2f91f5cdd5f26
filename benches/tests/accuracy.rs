//! Holds the redactor to its accuracy targets on the committed labelled corpora
//! (`benches/accuracy/data/`, made by third-party generators; no Python needed here):
//! recall and precision of at least 0.99 per kind on each corpus, with the default
//! settings and with E.164 numbers on, and no finding at all on the negative set.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, reason = "test")]

#[path = "../src/accuracy.rs"]
mod accuracy;

use accuracy::Mode;

const TARGET: f64 = 0.99;

fn hold(mode: Mode) {
    let (table, scores) = accuracy::table(mode);
    let mut failures = Vec::new();
    for (corpus, s) in &scores {
        for (kind, c) in &s.kinds {
            if c.recall() < TARGET || c.precision() < TARGET {
                failures.push(format!(
                    "{corpus} {kind:?}: recall {:.4}, precision {:.4}\n  misses: {:#?}\n  false: {:#?}",
                    c.recall(),
                    c.precision(),
                    s.misses,
                    s.false_findings
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{mode:?}\n{table}\n{}", failures.join("\n"));
}

#[test]
fn every_kind_meets_the_targets_with_the_default_settings() {
    hold(Mode::DEFAULT);
}

#[test]
fn every_kind_meets_the_targets_with_e164_numbers_on() {
    hold(Mode {
        e164: true,
        ..Mode::DEFAULT
    });
}

#[test]
fn every_kind_meets_the_targets_with_documentation_domains_redacted() {
    hold(Mode {
        documentation_domains: true,
        ..Mode::DEFAULT
    });
}

#[test]
fn nothing_is_found_in_the_negative_set() {
    let cases = accuracy::load(accuracy::NEGATIVES);
    assert!(cases.len() >= 1000, "{} look-alikes", cases.len());
    let (n, shown) = accuracy::negatives(&Mode::DEFAULT.redactor(), &cases);
    assert_eq!(n, 0, "{shown:#?}");
}
