//! All request headers from one host call, looked up in module memory.
//!
//! proxy-wasm hands a header map over as one block: a little-endian `u32` count, a
//! `(u32 name length, u32 value length)` table, then each name and value followed
//! by a NUL byte. [`HeaderBlock`] keeps that block as it came and finds values in it
//! without copying (names are lower-case in Envoy's maps; the first of repeated
//! headers wins, as with Envoy's single-header read). A malformed block finds nothing.

use crate::route::RequestHeaders;

/// A serialised header map (proxy-wasm's pairs format).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    bytes: Vec<u8>,
}

impl HeaderBlock {
    /// Wraps a block as the host returned it (an empty one: no headers).
    pub fn new(bytes: Vec<u8>) -> HeaderBlock {
        HeaderBlock { bytes }
    }

    /// Serialises `(name, value)` pairs into the format the host uses.
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> HeaderBlock {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&len32(pairs.len()));
        for (name, value) in pairs {
            bytes.extend_from_slice(&len32(name.as_ref().len()));
            bytes.extend_from_slice(&len32(value.as_ref().len()));
        }
        for (name, value) in pairs {
            bytes.extend_from_slice(name.as_ref());
            bytes.push(0);
            bytes.extend_from_slice(value.as_ref());
            bytes.push(0);
        }
        HeaderBlock { bytes }
    }

    /// The bytes as the host returned them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs()?
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// Every `(name, value)` in order; `None` when the block is malformed (a length
    /// table or data running past its end).
    pub fn pairs(&self) -> Option<impl Iterator<Item = (&[u8], &[u8])> + '_> {
        let count = usize::try_from(read_u32(&self.bytes, 0)?).ok()?;
        let table_end = count.checked_mul(8)?.checked_add(4)?;
        let table = self.bytes.get(4..table_end)?;
        let mut data = table_end;
        // Checked up front, so that iteration needs no error path.
        for entry in table.as_chunks::<8>().0 {
            let name = usize::try_from(read_u32(entry, 0)?).ok()?;
            let value = usize::try_from(read_u32(entry, 4)?).ok()?;
            data = data.checked_add(name)?.checked_add(value)?.checked_add(2)?;
        }
        if data > self.bytes.len() {
            return None;
        }
        let bytes = &self.bytes;
        let mut at = table_end;
        Some(table.as_chunks::<8>().0.iter().filter_map(move |entry| {
            let name = usize::try_from(read_u32(entry, 0)?).ok()?;
            let value = usize::try_from(read_u32(entry, 4)?).ok()?;
            let name_at = at;
            let value_at = name_at + name + 1;
            at = value_at + value + 1;
            Some((
                bytes.get(name_at..name_at + name)?,
                bytes.get(value_at..value_at + value)?,
            ))
        }))
    }
}

impl RequestHeaders for HeaderBlock {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.get(name).map(<[u8]>::to_vec)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn finds_the_first_value_of_a_name_and_nothing_else() {
        let block = HeaderBlock::from_pairs(&[
            (":path", &b"/modelmesh/a/v2/models/g"[..]),
            ("mm-vmodel-id", b"first"),
            ("x-empty", b""),
            ("mm-vmodel-id", b"second"),
            ("x-bytes", b"\xff\x00\xfe"),
        ]);
        assert_eq!(block.get(":path"), Some(&b"/modelmesh/a/v2/models/g"[..]));
        assert_eq!(block.get("mm-vmodel-id"), Some(&b"first"[..]));
        assert_eq!(block.get("x-empty"), Some(&b""[..]));
        assert_eq!(block.get("x-bytes"), Some(&b"\xff\x00\xfe"[..]));
        assert_eq!(block.get("x-missing"), None);
        assert_eq!(block.get("mm-vmodel"), None, "whole names only");
        assert_eq!(block.header("x-empty"), Some(Vec::new()));
        assert_eq!(block.pairs().unwrap().count(), 5);
        assert_eq!(HeaderBlock::default().get(":path"), None);
        assert_eq!(
            HeaderBlock::from_pairs::<&str, &str>(&[]).get(":path"),
            None
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_malformed_block_finds_nothing_and_never_panics() {
        let good = HeaderBlock::from_pairs(&[(":path", "/x"), ("a", "b")]);
        let bytes = good.as_bytes();
        for cut in 0..bytes.len() {
            let truncated = HeaderBlock::new(bytes[..cut].to_vec());
            // Truncation inside the table or data: found nothing or a correct value.
            if let Some(v) = truncated.get("a") {
                assert_eq!(v, b"b");
            }
        }
        let mut huge_count = bytes.to_vec();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderBlock::new(huge_count).get(":path"), None);
        let mut huge_length = bytes.to_vec();
        huge_length[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderBlock::new(huge_length).get(":path"), None);
        for seed in 0u64..2000 {
            let mut state = seed;
            let noise: Vec<u8> = (0..(seed % 40) as usize)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 56) as u8 % 4
                })
                .collect();
            let _ = HeaderBlock::new(noise).get("a");
        }
    }
}
