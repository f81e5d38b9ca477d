//! Hostile collaborative-document updates: valid Yjs updates from a generator, then mutated
//! (bit flips, truncations, splices of two updates, inflated variable-length integers, random
//! bytes), seeded so that a failing input can be made again.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yrs::{Array, Doc, Map, ReadTxn, Text, Transact};

/// Makes updates from a seed.
#[derive(Debug)]
pub struct Mutator {
    rng: StdRng,
    /// Valid updates made so far (the material mutations start from).
    corpus: Vec<Vec<u8>>,
    doc: Doc,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
            corpus: Vec::new(),
            doc: Doc::with_client_id(seed.max(1)),
        }
    }

    /// A valid update: a random edit of the generator's own document (text, map or array).
    pub fn valid(&mut self) -> Vec<u8> {
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
        if self.corpus.is_empty() || self.rng.random_bool(0.2) {
            return self.valid();
        }
        let i = self.rng.random_range(0..self.corpus.len());
        self.corpus[i].clone()
    }

    /// An input for the server: one time in eight a valid update, else a mutated one.
    pub fn input(&mut self) -> Vec<u8> {
        if self.rng.random_range(0..8) == 0 {
            return self.valid();
        }
        let mut u = self.pick();
        match self.rng.random_range(0..6) {
            0 => {
                for _ in 0..self.rng.random_range(1..8) {
                    if u.is_empty() {
                        break;
                    }
                    let i = self.rng.random_range(0..u.len());
                    u[i] ^= 1 << self.rng.random_range(0..8);
                }
            }
            1 => {
                let n = self.rng.random_range(0..=u.len());
                u.truncate(n);
            }
            2 => {
                let other = self.pick();
                let a = self.rng.random_range(0..=u.len());
                let b = self.rng.random_range(0..=other.len());
                u.truncate(a);
                u.extend_from_slice(&other[b..]);
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
            }
            4 => {
                let n = self.rng.random_range(0..64);
                u = (0..n).map(|_| self.rng.random()).collect();
            }
            _ => {
                let i = self.rng.random_range(0..=u.len());
                let v: u8 = self.rng.random();
                u.insert(i, v);
            }
        }
        u
    }
}
