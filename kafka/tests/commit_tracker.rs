//! The commit tracker against a model: whatever order events finish in, and whatever offsets
//! Kafka skips (a few, or stretches longer than the window), the commit point is the lowest
//! offset taken and not finished (or one past the last taken), it never passes an unfinished
//! event, and the window refuses exactly the offsets too far past it while events are in
//! flight.

use std::collections::BTreeSet;

use proptest::prelude::*;
use veltrix_kafka::{CommitTracker, Take};

#[derive(Clone, Debug)]
enum Op {
    /// Take the next offset after skipping this many (Kafka's gaps).
    Take { skip: u16 },
    /// Finish the in-flight event at this index (mod the number in flight).
    Finish(usize),
    /// Take an offset already taken (a copy).
    Again(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![8 => Just(0u16), 2 => 1u16..5, 1 => 5u16..2_000].prop_map(|skip| Op::Take { skip }),
        5 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Again),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_commit_point_is_the_lowest_unfinished_offset(
        start in 0i64..1_000_000,
        window in 1usize..200,
        ops in prop::collection::vec(op(), 1..400),
    ) {
        let mut t = CommitTracker::new(window);
        let mut in_flight = BTreeSet::new();
        let mut taken = Vec::new();
        let mut next = start;
        let mut gaps = 0u64;
        for op in ops {
            match op {
                Op::Take { skip } => {
                    let offset = next + i64::from(skip);
                    let point = in_flight.first().copied().unwrap_or(next);
                    let got = t.take(offset);
                    // Refused only past the window while something is in flight.
                    if in_flight.is_empty() || offset - point < t.window() as i64 {
                        prop_assert_eq!(got, Take::Taken);
                        if !taken.is_empty() {
                            gaps += u64::from(skip);
                        }
                        in_flight.insert(offset);
                        taken.push(offset);
                        next = offset + 1;
                    } else {
                        prop_assert_eq!(got, Take::Full, "offset {} past point {}", offset, point);
                    }
                }
                Op::Finish(i) if !in_flight.is_empty() => {
                    let offset = *in_flight.iter().nth(i % in_flight.len()).unwrap();
                    prop_assert!(t.finish(offset));
                    prop_assert!(!t.finish(offset), "finished twice");
                    in_flight.remove(&offset);
                }
                Op::Again(i) if !taken.is_empty() => {
                    prop_assert_eq!(t.take(taken[i % taken.len()]), Take::Again);
                }
                _ => {}
            }
            if !taken.is_empty() {
                let expected = in_flight.first().copied().unwrap_or(next);
                prop_assert_eq!(t.commit_point(), Some(expected));
            }
            prop_assert_eq!(t.in_flight(), in_flight.len());
            prop_assert_eq!(t.gaps(), gaps);
        }
    }
}
