//! Diffs between two versions of a keyed list, shared by the timeline and the room list.
//!
//! Both keep the list they last delivered, read the new one from the store, and hand the app
//! the steps that turn one into the other. Items are matched by key (a message's local id, a
//! room's name): removals first, from the end so that indices hold, then one walk over the new
//! list that keeps, sets, moves (a remove and an insert) or inserts. Applying the steps in order
//! to the old list gives the new one exactly.

use std::collections::HashSet;

/// One step; an index refers to the list as it is when the step is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step<T> {
    Insert(u32, T),
    Set(u32, T),
    Remove(u32),
}

/// The steps that turn `old` into `new`, matching items by `key`.
pub(crate) fn steps<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &str,
) -> Vec<Step<T>> {
    let wanted: HashSet<&str> = new.iter().map(&key).collect();
    let mut out = Vec::new();
    let mut cur: Vec<&T> = Vec::with_capacity(old.len().max(new.len()));
    for (i, item) in old.iter().enumerate().rev() {
        if wanted.contains(key(item)) {
            cur.push(item);
        } else {
            out.push(Step::Remove(idx(i)));
        }
    }
    cur.reverse();
    for (i, item) in new.iter().enumerate() {
        match cur.get(i) {
            Some(c) if key(c) == key(item) => {
                if *c != item {
                    out.push(Step::Set(idx(i), item.clone()));
                    cur[i] = item;
                }
            }
            _ => {
                if let Some(j) = cur.iter().skip(i + 1).position(|c| key(c) == key(item)) {
                    cur.remove(i + 1 + j);
                    out.push(Step::Remove(idx(i + 1 + j)));
                }
                cur.insert(i, item);
                out.push(Step::Insert(idx(i), item.clone()));
            }
        }
    }
    out
}

/// Applies steps to a list, as an app would.
pub(crate) fn apply<T>(list: &mut Vec<T>, steps: impl IntoIterator<Item = Step<T>>) {
    for s in steps {
        match s {
            Step::Insert(index, item) => {
                let i = (index as usize).min(list.len());
                list.insert(i, item);
            }
            Step::Set(index, item) => {
                if let Some(slot) = list.get_mut(index as usize) {
                    *slot = item;
                }
            }
            Step::Remove(index) => {
                if (index as usize) < list.len() {
                    list.remove(index as usize);
                }
            }
        }
    }
}

fn idx(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(old: &[(&str, u32)], new: &[(&str, u32)]) -> Vec<Step<(String, u32)>> {
        let old: Vec<(String, u32)> = old.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        let new: Vec<(String, u32)> = new.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        let s = steps(&old, &new, |x| x.0.as_str());
        let mut list = old;
        apply(&mut list, s.clone());
        assert_eq!(list, new);
        s
    }

    #[test]
    fn a_moved_item_is_one_remove_and_one_insert() {
        let s = check(
            &[("a", 1), ("b", 1), ("c", 1)],
            &[("c", 2), ("a", 1), ("b", 1)],
        );
        assert_eq!(
            s,
            vec![Step::Remove(2), Step::Insert(0, ("c".to_owned(), 2))]
        );
    }

    #[test]
    fn equal_lists_give_nothing() {
        assert!(check(&[("a", 1), ("b", 2)], &[("a", 1), ("b", 2)]).is_empty());
    }

    #[test]
    fn every_mix_of_removals_inserts_sets_and_moves_is_reproduced() {
        let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for k in 0..60usize {
            let old: Vec<(&str, u32)> = keys
                .iter()
                .enumerate()
                .filter(|(i, _)| (i * 3 + k) % 4 != 0)
                .map(|(_, s)| (*s, 0))
                .collect();
            let mut new: Vec<(&str, u32)> = keys
                .iter()
                .enumerate()
                .filter(|(i, _)| (i * 5 + k) % 3 != 0)
                .map(|(i, s)| (*s, u32::from((i + k) % 4 == 0)))
                .collect();
            let n = new.len().max(1);
            new.rotate_left(k % n);
            check(&old, &new);
        }
    }
}
