//! Structure checks made before yrs sees an input.
//!
//! yrs reserves memory for the counts an input declares (the number of clients of an update,
//! of blocks of its first client, of entries of a state vector) before it reads the items, so
//! five bytes declaring four billion clients would make it reserve (and, for its hash maps,
//! initialise) gigabytes. Every item takes at least one byte of input, so a count larger than
//! the bytes left cannot be honest: such inputs are refused here, before any allocation.

use super::Refusal;

/// Reads one lib0 variable-length unsigned integer (7 bits a byte, low bits first).
fn var_uint(bytes: &[u8], at: &mut usize) -> Result<u64, Refusal> {
    let mut n: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *bytes
            .get(*at)
            .ok_or_else(|| Refusal::Malformed("the input ends inside a number".into()))?;
        *at += 1;
        if shift > 56 {
            return Err(Refusal::Malformed("a number is longer than 64 bits".into()));
        }
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
        shift += 7;
    }
}

fn bounded(what: &str, n: u64, each: u64, left: usize) -> Result<(), Refusal> {
    if n.saturating_mul(each) > left as u64 {
        return Err(Refusal::Malformed(format!(
            "the input declares {n} {what} but holds only {left} more bytes"
        )));
    }
    Ok(())
}

/// A v1 update: its client count, and its first client's block count, fit in its bytes.
pub fn update(bytes: &[u8]) -> Result<(), Refusal> {
    let mut at = 0;
    let clients = var_uint(bytes, &mut at)?;
    // A client's header is at least three bytes (its block count, id and first clock).
    bounded("clients", clients, 3, bytes.len() - at)?;
    if clients > 0 {
        let blocks = var_uint(bytes, &mut at)?;
        bounded("blocks", blocks, 1, bytes.len() - at)?;
        // Clocks are 32 bits and each block takes one at least: the first client's blocks
        // must end by the largest (yrs would wrap around, or panic, reading past it).
        let _client = var_uint(bytes, &mut at)?;
        let clock = var_uint(bytes, &mut at)?;
        if clock.saturating_add(blocks) > u64::from(u32::MAX) {
            return Err(Refusal::Malformed(format!(
                "the update's blocks start at clock {clock} and would pass the largest clock"
            )));
        }
    }
    Ok(())
}

/// A v1 state vector: its entry count fits in its bytes (two at least each).
pub fn state_vector(bytes: &[u8]) -> Result<(), Refusal> {
    let mut at = 0;
    let entries = var_uint(bytes, &mut at)?;
    bounded("state vector entries", entries, 2, bytes.len() - at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_counts_pass_and_inflated_ones_do_not() {
        assert!(update(&[0, 0]).is_ok(), "the empty update");
        // Four billion clients declared in five bytes.
        assert!(update(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]).is_err());
        // One client with a million blocks in a handful of bytes.
        assert!(update(&[1, 0xc0, 0x84, 0x3d, 1, 0]).is_err());
        assert!(state_vector(&[0]).is_ok());
        assert!(state_vector(&[0xff, 0xff, 0x03, 1, 1]).is_err());
        assert!(update(&[0x80]).is_err(), "cut inside a number");
        // One block at the last clock (it would end past it); one just before it passes.
        assert!(update(&[1, 1, 77, 0xff, 0xff, 0xff, 0xff, 0x0f, 4, 0]).is_err());
        assert!(update(&[1, 1, 77, 0xfe, 0xff, 0xff, 0xff, 0x0f, 4, 0]).is_ok());
    }
}
