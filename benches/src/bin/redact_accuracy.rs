//! Prints recall and precision of `PatternRedactor` per kind on each labelled corpus of
//! `benches/accuracy/data/` (third-party generators: Faker, presidio-evaluator; see
//! `benches/accuracy/generate.py`), with the default settings, with E.164 numbers on and
//! with documentation domains redacted, and the findings on the negative set.
//!
//! ```text
//! cargo run --release -p mcp-guard-benches --bin redact_accuracy [--misses]
//! ```
#![allow(clippy::print_stdout)]

#[path = "../accuracy.rs"]
mod accuracy;

use accuracy::Mode;

fn main() {
    let misses = std::env::args().any(|a| a == "--misses");
    let modes = [
        ("default settings", Mode::DEFAULT),
        (
            "E.164 numbers on",
            Mode {
                e164: true,
                ..Mode::DEFAULT
            },
        ),
        (
            "documentation domains redacted",
            Mode {
                documentation_domains: true,
                ..Mode::DEFAULT
            },
        ),
    ];
    for (name, mode) in modes {
        let (table, scores) = accuracy::table(mode);
        println!("## {name}\n\n{table}");
        for (corpus, s) in &scores {
            println!(
                "{corpus}: {} labelled values not scored (other countries' national phone formats and SSN-like numbers; bare digits and 12-15 digit Maestro numbers with no context)",
                s.unscored
            );
            if misses {
                for m in &s.misses {
                    println!("  missed {m}");
                }
                for f in &s.false_findings {
                    println!("  false {f}");
                }
            }
        }
        println!();
    }
    let negatives = accuracy::load(accuracy::NEGATIVES);
    let (n, shown) = accuracy::negatives(&Mode::DEFAULT.redactor(), &negatives);
    println!("negative set: {} look-alikes, {n} findings", negatives.len());
    for s in shown {
        println!("  {s}");
    }
}
