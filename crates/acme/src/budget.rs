//! The weekly order budget: how many certificates the broker may have issued in any 7 days,
//! and how much of that one tenant may take.
//!
//! Why: the CA's rate limits are shared by every tenant (Let's Encrypt issues at most 50
//! certificates per registered domain per week), so without a budget one tenant binding 300
//! names would lock everyone out of new certificates for a week. The budget sits below the CA's
//! limit, a name past it waits in line (it is ordered when the window slides), and a tenant's
//! share is capped so the line cannot be one tenant's.
//!
//! [`OrderBudget::decide`] is pure: given the issuances of the past week (the store's
//! `cert.issue` events, so a restart forgets nothing) and the names that want an order now, it
//! says which may be ordered and, for the others, when the answer can change.

use std::collections::HashMap;

/// The window the CA counts over, in seconds: a week.
pub const WINDOW: i64 = 7 * 86_400;

/// The limits, per sliding 7-day window.
///
/// One budget covers every name, although the CA counts per registered domain: conservative
/// (custom domains, each its own registered domain, may later want their own budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBudget {
    /// Certificates the broker may have issued in any 7 days, renewals included.
    pub per_week: u32,
    /// Of those, how many one tenant's names may take. Names without an owner (the broker's
    /// own, such as the wildcard) are bounded by `per_week` only.
    pub per_owner_per_week: u32,
}

impl Default for OrderBudget {
    /// 40 a week, 10 per tenant: below Let's Encrypt's 50 per registered domain, leaving room
    /// for the operator's own orders and for a second node's in-flight order.
    fn default() -> Self {
        Self {
            per_week: 40,
            per_owner_per_week: 10,
        }
    }
}

/// One certificate the CA issued: when, and whose name it was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    /// Unix seconds.
    pub at: i64,
    /// The tenant charged; `None` for the broker's own names.
    pub owner: Option<i64>,
}

/// A name that wants an order now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The certificate name.
    pub name: String,
    /// The tenant charged: who holds the name's reservation or bound it.
    pub owner: Option<i64>,
    /// The name already has a certificate: this order renews it.
    pub renewal: bool,
}

/// Why a first order waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The broker's weekly budget is used up.
    Global {
        /// [`OrderBudget::per_week`].
        cap: u32,
    },
    /// The owner's share of it is used up.
    Owner {
        /// The tenant.
        owner: i64,
        /// [`OrderBudget::per_owner_per_week`].
        cap: u32,
    },
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global { cap } => write!(
                f,
                "the broker's {cap} certificate{} of the past 7 days are used",
                if *cap == 1 { "" } else { "s" }
            ),
            Self::Owner { owner, cap } => write!(
                f,
                "user {owner}'s share ({cap} certificate{} per 7 days) is used",
                if *cap == 1 { "" } else { "s" }
            ),
        }
    }
}

/// What to do with one [`Candidate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Order it now.
    Order,
    /// Not now: look again at `until` (Unix seconds), the earliest time an issuance that blocks
    /// it leaves the window. Names queued ahead may take that slot first.
    Wait {
        /// Unix seconds, always after `now`.
        until: i64,
        /// The limit that holds it back (the broker's, when both do).
        limit: Limit,
    },
}

impl OrderBudget {
    /// One verdict per candidate, in order. Candidates are served first come, first served,
    /// except that a candidate held back by its owner's share does not hold back those behind
    /// it. Each admitted candidate counts, for the ones after it, as issued at `now`.
    ///
    /// Renewals are never held back, whatever the counts: a renewal must never be starved (a
    /// tenant's live name would lose its certificate), and Let's Encrypt exempts renewals from
    /// its new-certificate limit. They still count, globally and for their owner, and they are
    /// counted before any first order wherever they stand in `queue`, so first orders decided
    /// together with them see what they use.
    pub fn decide(&self, now: i64, history: &[Issued], queue: &[Candidate]) -> Vec<Verdict> {
        let mut window = Window::default();
        for i in history.iter().filter(|i| i.at > now - WINDOW) {
            window.add(i.at, i.owner);
        }
        for c in queue.iter().filter(|c| c.renewal) {
            window.add(now, c.owner);
        }
        queue
            .iter()
            .map(|c| {
                if c.renewal {
                    return Verdict::Order;
                }
                match self.wait(&window, c.owner, now) {
                    Some((until, limit)) => Verdict::Wait {
                        until: until.max(now + 1),
                        limit,
                    },
                    None => {
                        window.add(now, c.owner);
                        Verdict::Order
                    }
                }
            })
            .collect()
    }

    /// Until when a first order for `owner` must wait, and why; `None` if it may go now.
    fn wait(&self, window: &Window, owner: Option<i64>, now: i64) -> Option<(i64, Limit)> {
        let global = (window.all.len() >= self.per_week as usize).then(|| {
            let until = frees_at(&window.all, self.per_week, now);
            (until, Limit::Global { cap: self.per_week })
        });
        let share = owner.and_then(|owner| {
            let times = window.by_owner.get(&owner).map_or(&[][..], Vec::as_slice);
            (times.len() >= self.per_owner_per_week as usize).then(|| {
                let until = frees_at(times, self.per_owner_per_week, now);
                let cap = self.per_owner_per_week;
                (until, Limit::Owner { owner, cap })
            })
        });
        match (global, share) {
            (Some((g, limit)), Some((o, _))) => Some((g.max(o), limit)),
            (global, share) => global.or(share),
        }
    }
}

/// The issuances inside the window: all of them, and per owner.
#[derive(Default)]
struct Window {
    all: Vec<i64>,
    by_owner: HashMap<i64, Vec<i64>>,
}

impl Window {
    fn add(&mut self, at: i64, owner: Option<i64>) {
        self.all.push(at);
        if let Some(o) = owner {
            self.by_owner.entry(o).or_default().push(at);
        }
    }
}

/// When a window holding issuances at `times` (all within the window) has room under `cap`
/// again: when the oldest one that keeps it full leaves the window.
fn frees_at(times: &[i64], cap: u32, now: i64) -> i64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let over = sorted.len().saturating_sub(cap as usize);
    // With a cap of 0 nothing ever fits: look again in a week (the operator may have changed it).
    match (cap, sorted.get(over)) {
        (1.., Some(t)) => t + WINDOW,
        _ => now + WINDOW,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;
    const DAY: i64 = 86_400;

    fn first(name: &str, owner: Option<i64>) -> Candidate {
        Candidate {
            name: name.into(),
            owner,
            renewal: false,
        }
    }

    fn renewal(name: &str, owner: Option<i64>) -> Candidate {
        Candidate {
            renewal: true,
            ..first(name, owner)
        }
    }

    fn issued(days_ago: i64, owner: Option<i64>) -> Issued {
        Issued {
            at: NOW - days_ago * DAY,
            owner,
        }
    }

    fn budget(per_week: u32, per_owner_per_week: u32) -> OrderBudget {
        OrderBudget {
            per_week,
            per_owner_per_week,
        }
    }

    #[test]
    fn the_global_cap_queues_past_it_until_the_oldest_leaves_the_window() {
        let history = [issued(3, Some(1)), issued(1, Some(2))];
        let queue = [
            first("a", Some(3)),
            first("b", Some(4)),
            first("c", Some(5)),
        ];
        let v = budget(3, 10).decide(NOW, &history, &queue);
        assert_eq!(v[0], Verdict::Order);
        // Full now: the issuance of 3 days ago leaves the window in 4 days.
        let wait = Verdict::Wait {
            until: NOW + 4 * DAY,
            limit: Limit::Global { cap: 3 },
        };
        assert_eq!(&v[1..], &[wait, wait]);
        // Nothing in the queue: nothing decided.
        assert!(budget(3, 10).decide(NOW, &history, &[]).is_empty());
    }

    #[test]
    fn a_tenant_past_its_share_waits_without_holding_back_others() {
        let history = [issued(2, Some(1)), issued(6, Some(1))];
        let queue = [
            first("alice-3", Some(1)),
            first("bob-1", Some(2)),
            first("bob-2", Some(2)),
            first("wildcard", None),
        ];
        let v = budget(40, 2).decide(NOW, &history, &queue);
        assert_eq!(
            v[0],
            Verdict::Wait {
                until: NOW + DAY, // the one of 6 days ago leaves first
                limit: Limit::Owner { owner: 1, cap: 2 },
            }
        );
        assert_eq!(v[1], Verdict::Order);
        assert_eq!(v[2], Verdict::Order);
        // The broker's own names have no share to exhaust.
        assert_eq!(v[3], Verdict::Order);
        // bob's third would now wait, its share taken by the two just admitted.
        let v = budget(40, 2).decide(
            NOW,
            &history,
            &[
                first("bob-1", Some(2)),
                first("bob-2", Some(2)),
                first("bob-3", Some(2)),
            ],
        );
        assert_eq!(
            v[2],
            Verdict::Wait {
                until: NOW + WINDOW,
                limit: Limit::Owner { owner: 2, cap: 2 }
            }
        );
    }

    #[test]
    fn when_both_limits_hold_the_broker_s_is_named_and_the_later_time_kept() {
        let history = [issued(6, None), issued(1, Some(1))];
        let v = budget(2, 1).decide(NOW, &history, &[first("a", Some(1))]);
        assert_eq!(
            v,
            [Verdict::Wait {
                until: NOW + 6 * DAY,
                limit: Limit::Global { cap: 2 }
            }]
        );
    }

    #[test]
    fn renewals_are_never_held_back_but_count() {
        // Budget and share used up: the renewal goes ahead anyway.
        let history = [issued(1, Some(1)), issued(2, Some(2))];
        let queue = [first("new", Some(3)), renewal("old", Some(1))];
        let v = budget(2, 1).decide(NOW, &history, &queue);
        assert_eq!(v[1], Verdict::Order);
        assert!(matches!(v[0], Verdict::Wait { .. }));
        // With room for one: the renewal, though queued last, takes it before the first order.
        let v = budget(3, 5).decide(NOW, &history, &queue);
        assert_eq!(
            v,
            [
                Verdict::Wait {
                    until: NOW + 5 * DAY,
                    limit: Limit::Global { cap: 3 }
                },
                Verdict::Order
            ]
        );
        // And it counts against its owner's share.
        let v = budget(10, 2).decide(NOW, &[], &[first("a", Some(1)), renewal("b", Some(1))]);
        assert_eq!(v[1], Verdict::Order);
        assert_eq!(v[0], Verdict::Order);
        let v = budget(10, 2).decide(
            NOW,
            &[],
            &[
                first("a", Some(1)),
                first("c", Some(1)),
                renewal("b", Some(1)),
            ],
        );
        assert_eq!(v[0], Verdict::Order);
        assert!(matches!(
            v[1],
            Verdict::Wait {
                limit: Limit::Owner { owner: 1, .. },
                ..
            }
        ));
    }

    #[test]
    fn the_window_slides_after_seven_days() {
        let b = budget(1, 1);
        let at = |t: i64| {
            [Issued {
                at: t,
                owner: Some(1),
            }]
        };
        let queue = [first("a", Some(1))];
        // Issued exactly 7 days ago: out of the window.
        assert_eq!(b.decide(NOW, &at(NOW - WINDOW), &queue), [Verdict::Order]);
        // A second later it still counts, and frees in one second.
        assert_eq!(
            b.decide(NOW, &at(NOW - WINDOW + 1), &queue),
            [Verdict::Wait {
                until: NOW + 1,
                limit: Limit::Global { cap: 1 }
            }]
        );
        // Older history never counts.
        let old = [issued(8, Some(1)), issued(30, Some(1))];
        assert_eq!(b.decide(NOW, &old, &queue), [Verdict::Order]);
    }

    #[test]
    fn a_zero_cap_waits_a_week_rather_than_spinning() {
        let v = budget(0, 0).decide(NOW, &[], &[first("a", Some(1))]);
        assert_eq!(
            v,
            [Verdict::Wait {
                until: NOW + WINDOW,
                limit: Limit::Global { cap: 0 }
            }]
        );
    }

    #[test]
    fn limits_read_well() {
        assert_eq!(
            Limit::Global { cap: 40 }.to_string(),
            "the broker's 40 certificates of the past 7 days are used"
        );
        assert_eq!(
            Limit::Owner { owner: 7, cap: 1 }.to_string(),
            "user 7's share (1 certificate per 7 days) is used"
        );
    }
}
