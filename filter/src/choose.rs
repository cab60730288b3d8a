//! Picking the member of a group: override, sticky (rendezvous hashing) or weighted random.
//!
//! Everything here is plain integer and IEEE-754 arithmetic, so a sticky key maps
//! to the same member on every worker, every restart, natively and in wasm32.

use crate::plan::Group;

/// Golden-ratio increment; spreads consecutive inputs over the whole word.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A small fast PRNG (wyrand). One per worker VM, seeded once: wasm32-unknown-unknown
/// has no OS randomness, and a host call per request would cost more than the draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// Seed from what the host offers once per worker: its clock and the context id.
    pub fn from_host(time_nanos: u64, context_id: u32) -> Rng {
        Rng::new(fmix64(
            time_nanos ^ u64::from(context_id).rotate_left(32) ^ GOLDEN,
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A number in `0..n` (0 when `n` is 0); bias is below `n / 2^64`, far beneath notice.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// How the member of a request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The override header named this member.
    Override,
    /// The sticky header's value hashed to this member.
    Sticky,
    /// Drawn at random by weight.
    Weighted,
}

/// The member the override header names, if it names one exactly (weight 0 included:
/// that is how a member is tried before it gets traffic).
pub fn override_member(group: &Group, value: &[u8]) -> Option<usize> {
    group.member_named(value)
}

/// Weighted random draw: member `i` with probability `weight_i / total`; weight 0 never.
/// `None` only for a group without weight (never in a compiled plan).
pub fn weighted(group: &Group, rng: &mut Rng) -> Option<usize> {
    if group.total_weight == 0 {
        return None;
    }
    let r = rng.below(group.total_weight);
    // First member whose cumulative weight exceeds r; zero weights never do.
    let at = group.cumulative.partition_point(|&c| c <= r);
    (at < group.members.len()).then_some(at)
}

/// Weighted rendezvous hashing: each member scores `-ln(u) / weight` with `u` a
/// uniform hash of (key, member); the lowest score wins. The winner is member `i`
/// with probability `weight_i / total`, and raising one member's weight lowers only
/// its own score, so keys move only to that member. `None` when no member has weight.
pub fn sticky(group: &Group, key: &[u8]) -> Option<usize> {
    let key_hash = hash_bytes(key);
    let mut best: Option<(usize, f64)> = None;
    for (i, member) in group.members.iter().enumerate() {
        if member.weight == 0 {
            continue;
        }
        let score = neg_ln_unit(fmix64(key_hash ^ member.hash_seed)) / f64::from(member.weight);
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// The rendezvous seed of a member: a fixed hash of `namespace/group/member`,
/// independent of member order, so adding or reordering members moves no other key.
pub fn member_seed(namespace: &str, group: &str, member: &str) -> u64 {
    hash_bytes(format!("{namespace}/{group}/{member}").as_bytes())
}

/// A fixed 64-bit hash of bytes (8-byte blocks through the murmur3 finaliser).
/// Part of the sticky contract: changing it re-shuffles every sticky key.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = (bytes.len() as u64).wrapping_mul(GOLDEN) ^ 0x243F_6A88_85A3_08D3;
    let (blocks, tail) = bytes.as_chunks::<8>();
    for block in blocks {
        h = fmix64(h ^ u64::from_le_bytes(*block)).wrapping_add(GOLDEN);
    }
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        for (w, t) in word.iter_mut().zip(tail) {
            *w = *t;
        }
        h = fmix64(h ^ u64::from_le_bytes(word)).wrapping_add(GOLDEN);
    }
    fmix64(h)
}

/// murmur3's 64-bit finaliser: a bijection that mixes every input bit into every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `-ln(u)` for `u = (top 52 bits of h + 0.5) / 2^52`, strictly inside (0, 1)
/// (52 bits so that `+ 0.5` stays exact and `u` never rounds to 1).
///
/// Computed with +, -, *, / only (exactly rounded everywhere) instead of the
/// platform's `ln`, whose last bit may differ between libm builds: a sticky key
/// must pick the same member on every build.
fn neg_ln_unit(h: u64) -> f64 {
    let u = ((h >> 12) as f64 + 0.5) * (1.0 / 4_503_599_627_370_496.0);
    let bits = u.to_bits();
    // u >= 2^-53, so it is a normal number: u = m * 2^e with m in [1, 2).
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    // ln(m) = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172: 12 odd terms reach 1e-18.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut power = s;
    let mut series = s;
    for k in 1..12u32 {
        power *= s2;
        series += power / f64::from(2 * k + 1);
    }
    -(2.0 * series + exponent as f64 * std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    fn group_of(weights: &[(&str, u32)]) -> Group {
        let members: Vec<String> = weights
            .iter()
            .map(|(n, w)| format!(r#"{{"name":"{n}","weight":{w}}}"#))
            .collect();
        let json = format!(
            r#"{{"groups":[{{"namespace":"ns","name":"g","members":[{}]}}]}}"#,
            members.join(",")
        );
        Plan::from_json(json.as_bytes()).unwrap().groups()[0].clone()
    }

    fn key(i: u32) -> Vec<u8> {
        format!("user-{i}").into_bytes()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn weighted_follows_the_weights_and_skips_zero() {
        let group = group_of(&[("a", 7000), ("zero", 0), ("b", 2000), ("c", 1000)]);
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 4];
        let n = 200_000;
        for _ in 0..n {
            counts[weighted(&group, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0, "weight 0 gets nothing");
        for (i, share) in [(0, 0.7), (2, 0.2), (3, 0.1)] {
            let observed = f64::from(counts[i]) / f64::from(n);
            // 5 standard deviations of a binomial share at n = 200k is below 0.006.
            assert!((observed - share).abs() < 0.006, "member {i}: {observed}");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn weighted_reaches_a_one_in_ten_thousand_member() {
        let group = group_of(&[("main", 9999), ("canary", 1)]);
        let mut rng = Rng::from_host(1_700_000_000_000_000_000, 7);
        let hits = (0..200_000)
            .filter(|_| weighted(&group, &mut rng) == Some(1))
            .count();
        // Expected 20; the chance of falling outside 3..=60 is below one in a million.
        assert!((3..=60).contains(&hits), "{hits}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn rng_seeds_differ_and_below_stays_in_range() {
        let mut a = Rng::from_host(1, 1);
        let mut b = Rng::from_host(1, 2);
        let mut c = Rng::from_host(2, 1);
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert!(x != y && y != z && x != z);
        let mut rng = Rng::new(0);
        assert_eq!(rng.below(0), 0);
        assert!((0..10_000).all(|_| rng.below(3) < 3));
        assert!((0..10_000).all(|_| rng.below(u64::MAX) < u64::MAX));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn sticky_is_a_pure_function_of_group_and_key() {
        let group = group_of(&[("a", 80), ("b", 20)]);
        let same_config_again = group_of(&[("a", 80), ("b", 20)]);
        for i in 0..2_000 {
            let k = key(i);
            assert_eq!(sticky(&group, &k), sticky(&same_config_again, &k));
        }
        // Golden values: the hash is part of the contract (same on every build and target;
        // this very test also runs compiled to wasm32).
        assert_eq!(hash_bytes(b""), 0x7acd_bb98_b134_4213);
        assert_eq!(hash_bytes(b"user-1"), 0xa475_a987_843d_fbb9);
        assert_eq!(
            hash_bytes(b"a longer key over two blocks"),
            0x112e_0581_95bc_a985
        );
        let three = group_of(&[("a", 50), ("b", 30), ("c", 20)]);
        let picks: String = (0..48)
            .map(|i| match sticky(&three, &key(i)) {
                Some(m) => char::from(b'a' + m as u8),
                None => '?',
            })
            .collect();
        assert_eq!(picks, "aaacaaacbbcabaaaccabbcbcaaaabcacaaaabcbbaabaaaba");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn sticky_shares_follow_the_weights() {
        let group = group_of(&[("a", 50), ("b", 30), ("c", 20), ("off", 0)]);
        let n = 100_000;
        let mut counts = [0u32; 4];
        for i in 0..n {
            counts[sticky(&group, &key(i)).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0);
        for (i, share) in [(0, 0.5), (1, 0.3), (2, 0.2)] {
            let observed = f64::from(counts[i]) / f64::from(n);
            assert!((observed - share).abs() < 0.008, "member {i}: {observed}");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn raising_one_weight_moves_only_keys_to_that_member() {
        let before = group_of(&[("a", 50), ("b", 30), ("c", 20)]);
        let after = group_of(&[("a", 50), ("b", 30), ("c", 40)]);
        let n = 100_000u32;
        let mut moved = 0u32;
        for i in 0..n {
            let k = key(i);
            let (was, now) = (sticky(&before, &k).unwrap(), sticky(&after, &k).unwrap());
            if was != now {
                assert_eq!(now, 2, "key {i} moved from {was} to unchanged member {now}");
                moved += 1;
            }
        }
        // c's share goes from 20/100 to 40/120: exactly that fraction of keys moves.
        let share_change = 40.0 / 120.0 - 20.0 / 100.0;
        let moved_fraction = f64::from(moved) / f64::from(n);
        assert!(
            (moved_fraction - share_change).abs() < 0.01,
            "moved {moved_fraction}, share change {share_change}"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn adding_a_member_only_takes_keys_from_others() {
        let before = group_of(&[("a", 80), ("b", 20)]);
        let after = group_of(&[("a", 80), ("b", 20), ("new", 25)]);
        for i in 0..20_000 {
            let k = key(i);
            let now = sticky(&after, &k).unwrap();
            if now != 2 {
                assert_eq!(sticky(&before, &k), Some(now), "key {i}");
            }
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn override_names_a_member_exactly() {
        let group = group_of(&[("a", 1), ("b-dark", 0)]);
        assert_eq!(
            override_member(&group, b"b-dark"),
            Some(1),
            "weight 0 included"
        );
        assert_eq!(override_member(&group, b"a"), Some(0));
        for other in [&b"A"[..], b"", b"a ", b"g", b"\xff\xfe"] {
            assert_eq!(override_member(&group, other), None);
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn neg_ln_matches_the_platform_closely() {
        let mut rng = Rng::new(9);
        for h in [0, 1, u64::MAX, 1 << 63, 12345]
            .into_iter()
            .chain((0..10_000).map(|_| rng.next_u64()))
        {
            let u = ((h >> 12) as f64 + 0.5) / 4_503_599_627_370_496.0;
            let exact = -u.ln();
            let ours = neg_ln_unit(h);
            assert!(ours > 0.0);
            assert!(
                (ours - exact).abs() <= 1e-14 * exact.max(1e-3),
                "{h}: {ours} vs {exact}"
            );
        }
    }
}
