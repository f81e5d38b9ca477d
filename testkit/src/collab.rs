//! Hostile collaborative-document updates: valid Yjs updates from a generator, then mutated
//! (bit flips, truncations, splices of two updates, inflated variable-length integers, random
//! bytes), seeded so that a failing input can be made again.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yrs::{Array, Doc, Map, ReadTxn, Text, Transact};

/// What an input from [`Mutator::case`] is: a valid update, or how one was mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A valid update of the generator's document, in order.
    Valid,
    /// Up to seven bits flipped.
    BitFlips,
    /// Cut short.
    Truncated,
    /// The head of one update joined to the tail of another.
    Spliced,
    /// A huge count or length (an inflated variable-length integer) inserted somewhere.
    InflatedVarint,
    /// Random bytes.
    Random,
    /// One random byte inserted.
    InsertedByte,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 7] = [
        Kind::Valid,
        Kind::BitFlips,
        Kind::Truncated,
        Kind::Spliced,
        Kind::InflatedVarint,
        Kind::Random,
        Kind::InsertedByte,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid",
            Kind::BitFlips => "bit flips",
            Kind::Truncated => "truncated",
            Kind::Spliced => "spliced",
            Kind::InflatedVarint => "inflated varint",
            Kind::Random => "random bytes",
            Kind::InsertedByte => "inserted byte",
        }
    }
}

/// Makes updates from a seed.
///
/// Every edit of the generator's document is handed out once as a [`Kind::Valid`] input, in the
/// order the edits were made (an edit first used as material for a mutation waits its turn),
/// so that the valid inputs build on one another as a client's updates do: a receiver that
/// applied all of them holds the generator's document, whatever mutated inputs it refused.
#[derive(Debug)]
pub struct Mutator {
    rng: StdRng,
    /// Valid updates made so far (the material mutations start from).
    corpus: Vec<Vec<u8>>,
    /// Edits made but not handed out yet as valid inputs, oldest first.
    unsent: VecDeque<Vec<u8>>,
    doc: Doc,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
            corpus: Vec::new(),
            unsent: VecDeque::new(),
            doc: Doc::with_client_id(seed.max(1)),
        }
    }

    /// The next valid update: the oldest edit not handed out yet, or a new one.
    pub fn valid(&mut self) -> Vec<u8> {
        match self.unsent.pop_front() {
            Some(u) => u,
            None => self.edit(),
        }
    }

    /// A new random edit of the generator's own document (text, map or array), as an update.
    fn edit(&mut self) -> Vec<u8> {
        let text = self.doc.get_or_insert_text("t");
        let map = self.doc.get_or_insert_map("m");
        let arr = self.doc.get_or_insert_array("a");
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            let len = text.len(&txn);
            match self.rng.random_range(0..5) {
                0 if len > 0 => {
                    let at = self.rng.random_range(0..len);
                    let n = self.rng.random_range(1..=(len - at).min(8));
                    text.remove_range(&mut txn, at, n);
                }
                1 => {
                    let k = format!("k{}", self.rng.random_range(0..16));
                    map.insert(&mut txn, k, self.rng.random_range(0..1000) as f64);
                }
                2 => {
                    let at = self.rng.random_range(0..=arr.len(&txn));
                    arr.insert(&mut txn, at, "item");
                }
                _ => {
                    let at = self.rng.random_range(0..=len);
                    let n = self.rng.random_range(1..12);
                    let s: String = (0..n)
                        .map(|_| char::from(b'a' + self.rng.random_range(0..26u8)))
                        .collect();
                    text.insert(&mut txn, at, &s);
                }
            }
        }
        let u = self.doc.transact().encode_diff_v1(&before);
        if self.corpus.len() < 256 {
            self.corpus.push(u.clone());
        } else {
            let i = self.rng.random_range(0..self.corpus.len());
            self.corpus[i] = u.clone();
        }
        u
    }

    fn pick(&mut self) -> Vec<u8> {
        // Less often than valid inputs are handed out (one in eight), so `unsent` stays short.
        if self.corpus.is_empty() || self.rng.random_bool(0.1) {
            let u = self.edit();
            self.unsent.push_back(u.clone());
            return u;
        }
        let i = self.rng.random_range(0..self.corpus.len());
        self.corpus[i].clone()
    }

    /// An input for the server: one time in eight a valid update, else a mutated one.
    pub fn input(&mut self) -> Vec<u8> {
        self.case().1
    }

    /// The same input as [`Mutator::input`], with what kind of input it is.
    pub fn case(&mut self) -> (Kind, Vec<u8>) {
        if self.rng.random_range(0..8) == 0 {
            return (Kind::Valid, self.valid());
        }
        let mut u = self.pick();
        let kind = match self.rng.random_range(0..6) {
            0 => {
                for _ in 0..self.rng.random_range(1..8) {
                    if u.is_empty() {
                        break;
                    }
                    let i = self.rng.random_range(0..u.len());
                    u[i] ^= 1 << self.rng.random_range(0..8);
                }
                Kind::BitFlips
            }
            1 => {
                let n = self.rng.random_range(0..=u.len());
                u.truncate(n);
                Kind::Truncated
            }
            2 => {
                let other = self.pick();
                let a = self.rng.random_range(0..=u.len());
                let b = self.rng.random_range(0..=other.len());
                u.truncate(a);
                u.extend_from_slice(&other[b..]);
                Kind::Spliced
            }
            3 => {
                // An inflated varint (a huge count or length) somewhere.
                let at = self.rng.random_range(0..=u.len());
                let big: &[u8] = match self.rng.random_range(0..3) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    1 => &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                    _ => &[0xc0, 0x84, 0x3d],
                };
                u.splice(at..at, big.iter().copied());
                Kind::InflatedVarint
            }
            4 => {
                let n = self.rng.random_range(0..64);
                u = (0..n).map(|_| self.rng.random()).collect();
                Kind::Random
            }
            _ => {
                let i = self.rng.random_range(0..=u.len());
                let v: u8 = self.rng.random();
                u.insert(i, v);
                Kind::InsertedByte
            }
        };
        (kind, u)
    }
}
