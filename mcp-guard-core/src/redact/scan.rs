//! The scanner: one forward pass over the bytes with a cheap trigger test, per-type
//! candidates at each trigger, then a merge of overlapping findings.

use memchr::memmem;

use super::Kind;
use super::detect::{digit_run_len, email, ip, numeric, secret};
use super::known::KnownSet;

/// A finding: `start..end` in the input, of kind `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: Kind,
}

/// What the surrounding structure says about a string (from its JSON key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags, read one at a time"
)]
pub(crate) struct Hints {
    /// The key names an SSN: nine bare digits count.
    pub(crate) ssn: bool,
    /// The key names a phone number: ten bare digits count.
    pub(crate) phone: bool,
    /// The key names a version: dotted quads are not addresses.
    pub(crate) version: bool,
    /// The key names a credential: the whole value is a secret.
    pub(crate) secret: bool,
}

/// Compiled, immutable detection settings.
#[derive(Debug)]
pub(crate) struct Scanner {
    pub(crate) enabled: u16,
    pub(crate) e164: bool,
    bearer: memmem::Finder<'static>,
}

/// Bytes that can start a finding: `0`-`9` and `:` (numbers, IPs), `@` (email), and
/// `_ - A J` (credential prefixes such as `ghp_`, `sk-`, `AKIA`, `eyJ`).
static TRIGGER: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b'0';
    while b <= b':' {
        t[b as usize] = true;
        b += 1;
    }
    t[b'@' as usize] = true;
    t[b'_' as usize] = true;
    t[b'-' as usize] = true;
    t[b'A' as usize] = true;
    t[b'J' as usize] = true;
    t
};

/// Next trigger at or after `i`. The next few bytes are looked at one by one (triggers
/// come in clusters); after that, clean stretches are skipped 32 bytes at a time with a
/// branch-free test the compiler turns into vector code.
#[inline]
fn next_trigger(h: &[u8], mut i: usize) -> Option<usize> {
    const W: usize = 32;
    let near = h.get(i..(i + 8).min(h.len()))?;
    if let Some(k) = near.iter().position(|&b| TRIGGER[usize::from(b)]) {
        return Some(i + k);
    }
    i += near.len();
    while let Some(chunk) = h.get(i..i + W).and_then(|c| <&[u8; W]>::try_from(c).ok()) {
        let mut any = 0u8;
        for &b in chunk {
            any |= u8::from(b.wrapping_sub(b'0') <= 10)
                | u8::from(b == b'@')
                | u8::from(b == b'_')
                | u8::from(b == b'-')
                | u8::from(b == b'A')
                | u8::from(b == b'J');
        }
        if any != 0 {
            break;
        }
        i += W;
    }
    h.get(i..)?
        .iter()
        .position(|&b| TRIGGER[usize::from(b)])
        .map(|k| i + k)
}

impl Scanner {
    pub(crate) fn new(enabled: u16, e164: bool) -> Self {
        Self {
            enabled,
            e164,
            bearer: memmem::Finder::new(b"earer "),
        }
    }

    #[inline]
    pub(crate) fn on(&self, k: Kind) -> bool {
        self.enabled & k.bit() != 0
    }

    /// Appends every finding in `h` to `found` (unsorted, possibly overlapping).
    pub(crate) fn scan(&self, h: &[u8], hints: Hints, known: &KnownSet, found: &mut Vec<Hit>) {
        if let Some(ac) = &known.automaton {
            for m in ac.find_overlapping_iter(h) {
                found.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    kind: Kind::KnownSecret,
                });
            }
        }
        let mut pem = secret::PemState::default();
        // `Bearer `/`bearer ` and a 16-byte token (`BEARER ` is found from its `A`).
        if h.len() >= 23 {
            for at in self.bearer.find_iter(h) {
                if let Some((s, e)) = secret::bearer_at(h, at)
                    && let Some((start, end)) = secret::check(h, s, e, secret::Rule::Bearer, &mut pem)
                {
                    found.push(Hit {
                        start,
                        end,
                        kind: Kind::Secret,
                    });
                }
            }
        }
        let (email_on, v6_on) = (self.on(Kind::Email), self.on(Kind::Ipv6));
        let mut i = 0;
        let mut at_floor = 0;
        let mut v6_done = 0;
        while let Some(p) = next_trigger(h, i) {
            i = p + 1;
            match h[p] {
                b'@' => {
                    if email_on {
                        if let Some((start, end)) = email::email(h, p, at_floor) {
                            found.push(Hit {
                                start,
                                end,
                                kind: Kind::Email,
                            });
                            at_floor = end;
                        } else {
                            at_floor = p + 1;
                        }
                    }
                }
                b':' => {
                    if v6_on && p >= v6_done && ip::v6_colon_plausible(h, p) {
                        let (v6, region_end) = ip::ipv6(h, p, v6_done);
                        if let Some((start, end)) = v6 {
                            found.push(Hit {
                                start,
                                end,
                                kind: Kind::Ipv6,
                            });
                        }
                        v6_done = region_end;
                    }
                }
                b'_' | b'-' | b'A' | b'J' => {
                    if let Some((start, pend, rule)) = secret::prefix_at(h, p)
                        && let Some((start, end)) = secret::check(h, start, pend, rule, &mut pem)
                    {
                        found.push(Hit {
                            start,
                            end,
                            kind: Kind::Secret,
                        });
                        // Nothing inside a credential needs looking at again.
                        i = i.max(end);
                    }
                }
                _ => {
                    let run = digit_run_len(h, p);
                    self.numeric(h, p, run, hints, found);
                    i = p + run;
                }
            }
        }
    }

    /// Candidates of every numeric type whose first digit group starts at `p`. Each
    /// detector is only tried for run lengths it can start with.
    #[inline]
    fn numeric(&self, h: &[u8], p: usize, run: usize, hints: Hints, found: &mut Vec<Hit>) {
        let next = h.get(p + run).copied();
        if self.on(Kind::CreditCard)
            && (run == 4 || (13..=19).contains(&run))
            && matches!(h[p], b'2'..=b'6')
            && let Some(end) = numeric::card(h, p)
        {
            found.push(Hit {
                start: p,
                end,
                kind: Kind::CreditCard,
            });
        }
        if self.on(Kind::Ssn) {
            let ssn = if run == 3 && matches!(next, Some(b'-' | b' ')) {
                numeric::ssn(h, p)
            } else if hints.ssn && run == 9 {
                numeric::ssn_bare(h, p, run)
            } else {
                None
            };
            if let Some(end) = ssn {
                found.push(Hit {
                    start: p,
                    end,
                    kind: Kind::Ssn,
                });
            }
        }
        if self.on(Kind::Phone) {
            let plus = p > 0 && h[p - 1] == b'+';
            if (run == 3 || (run == 1 && h[p] == b'1') || plus || hints.phone)
                && let Some((start, end)) = numeric::phone(h, p, hints.phone, self.e164)
            {
                found.push(Hit {
                    start,
                    end,
                    kind: Kind::Phone,
                });
            }
        }
        if self.on(Kind::Ipv4)
            && run <= 3
            && next == Some(b'.')
            && !hints.version
            && let Some(end) = ip::ipv4(h, p)
        {
            found.push(Hit {
                start: p,
                end,
                kind: Kind::Ipv4,
            });
        }
    }
}

/// Sorts and merges overlapping findings; a merged finding keeps the kind of highest
/// priority among its parts.
pub(crate) fn merge(found: &mut Vec<Hit>) {
    if found.len() < 2 {
        return;
    }
    found.sort_unstable_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut w = 0;
    for r in 1..found.len() {
        let cur = found[r];
        let last = &mut found[w];
        if cur.start < last.end {
            last.end = last.end.max(cur.end);
            if cur.kind.priority() > last.kind.priority() {
                last.kind = cur.kind;
            }
        } else {
            w += 1;
            found[w] = cur;
        }
    }
    found.truncate(w + 1);
}
