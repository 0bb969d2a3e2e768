//! The coordinator as stories: given a job and what providers did, when a task comes back,
//! then these tasks, frames, verdicts and lease endings follow.

use std::collections::BTreeMap;

use contract::{AccountId, LeaseId, NodeId};
use render::coordinator::{FrameState, TaskState};
use render::{
    Coordinator, Ending, FrameRange, Output, PixelDigest, Placement, Policy, Refused, Role, Settled,
};

const HONEST_A: AccountId = AccountId(11);
const HONEST_B: AccountId = AccountId(12);
const LIAR: AccountId = AccountId(13);
const THIRD: AccountId = AccountId(14);

fn policy() -> Policy {
    Policy {
        frames_per_task: 8,
        review_ms: 1_000,
        ..Policy::default()
    }
}

fn job(frames: u32) -> Coordinator {
    Coordinator::new(FrameRange::new(1, frames).unwrap(), policy(), 42)
}

fn on(provider: AccountId, lease: u64) -> Placement {
    Placement {
        lease: LeaseId(lease),
        provider,
        node: NodeId::parse("n1").unwrap(),
    }
}

/// The true picture of frame `n`, and a wrong one.
fn truth(n: u32) -> Output {
    output(n, 0)
}

fn output(n: u32, wrong: u8) -> Output {
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(&n.to_be_bytes());
    d[4] = wrong;
    Output {
        cid: format!("cid-{n}-{wrong}"),
        pixels: PixelDigest::parse(&format!("px1-{}", hex(&d))).unwrap(),
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &Output, b: &Output) -> bool {
    a.pixels == b.pixels
}

/// `task` runs on `provider` and comes back with `render(frame)` for each of its frames.
fn run(
    c: &mut Coordinator,
    task: u32,
    provider: AccountId,
    lease: u64,
    render: impl Fn(u32) -> Result<Output, String>,
) {
    c.placed(task, on(provider, lease), 0).unwrap();
    let results: BTreeMap<u32, Result<Output, String>> = c
        .task(task)
        .unwrap()
        .frames
        .iter()
        .map(|n| (*n, render(*n)))
        .collect();
    c.finished(
        task,
        results,
        vec![format!("GPU-{}", provider.0)],
        1_000,
        &mut same,
    )
    .unwrap();
}

fn waiting(c: &Coordinator) -> Vec<(u32, Role, Vec<u32>)> {
    c.waiting()
        .map(|t| (t.id, t.role, t.frames.clone()))
        .collect()
}

/// Ends every lease the coordinator asks to, then settles every held payment it asks to,
/// as the render loop does; returns how each ended, in that order.
fn end_leases(c: &mut Coordinator) -> Vec<(LeaseId, Ending)> {
    let ends = c.leases_to_end();
    for (task, _, ending) in &ends {
        c.lease_ended(*task, Some(ending)).unwrap();
    }
    let settled = c.payments_to_settle();
    for (task, _, ending) in &settled {
        c.settled(*task, Some(ending)).unwrap();
    }
    ends.into_iter()
        .chain(settled)
        .map(|(_, lease, e)| (lease, e))
        .collect()
}

fn holds(ends: &[(LeaseId, Ending)]) -> usize {
    ends.iter()
        .filter(|(_, e)| matches!(e, Ending::Hold { .. }))
        .count()
}

fn releases(ends: &[(LeaseId, Ending)]) -> Vec<LeaseId> {
    ends.iter()
        .filter(|(_, e)| *e == Ending::Release)
        .map(|(l, _)| *l)
        .collect()
}

#[test]
fn a_job_is_split_into_tasks_of_at_most_the_frames_per_task() {
    let c = job(20);
    assert_eq!(
        waiting(&c),
        [
            (0, Role::Render, (1..=8).collect()),
            (1, Role::Render, (9..=16).collect()),
            (2, Role::Render, (17..=20).collect()),
        ]
    );
    assert!(!c.is_done());
}

#[test]
fn two_one_gpu_providers_check_each_other_and_are_paid_after_the_review() {
    // Given a 24-frame job on two honest providers of one GPU each.
    let mut c = job(24);
    // When each renders a task truly,
    run(&mut c, 0, HONEST_A, 100, |n| Ok(truth(n)));
    run(&mut c, 1, HONEST_B, 101, |n| Ok(truth(n)));
    // then both leases end at once, their GPUs free, their payments held for review,
    let ends = end_leases(&mut c);
    assert_eq!(
        ends,
        [
            (
                LeaseId(100),
                Ending::Hold {
                    hold_ms: c.policy.hold_ms()
                }
            ),
            (
                LeaseId(101),
                Ending::Hold {
                    hold_ms: c.policy.hold_ms()
                }
            ),
        ]
    );
    // and each provider has a frame checked by the other (on the GPU it freed), and the
    // third task waits for a render.
    let checks: Vec<_> = c
        .waiting()
        .filter(|t| t.role == Role::Check)
        .cloned()
        .collect();
    assert!(checks.len() >= 2);
    assert_eq!(c.checked.len(), 2);
    let other = |p: AccountId| if p == HONEST_A { HONEST_B } else { HONEST_A };
    let mut lease = 200;
    for check in &checks {
        let renderer = c.frame(check.frames[0]).unwrap().renders[0].provider;
        assert!(check.avoid.contains(&renderer));
        run(&mut c, check.id, other(renderer), lease, |n| Ok(truth(n)));
        lease += 1;
    }
    let last = c.waiting().next().unwrap().clone();
    assert_eq!(last.role, Role::Render);
    let last_lease = lease;
    run(&mut c, last.id, HONEST_A, last_lease, |n| Ok(truth(n)));
    // When the checks agree, the checks' leases end and are paid (their work matched),
    let ends = end_leases(&mut c);
    assert_eq!(holds(&ends), checks.len() + 1);
    let checks_paid: Vec<LeaseId> = (200..200 + checks.len() as u64).map(LeaseId).collect();
    assert_eq!(releases(&ends), checks_paid);
    // but the renders' payments wait for the buyer's review (the last task's frames wait
    // for their check as well, on B).
    assert!(c.verdicts.is_empty());
    assert!(c.payments_to_settle().is_empty());
    assert!(!c.is_done());
    let rest: Vec<_> = c.waiting().cloned().collect();
    for check in &rest {
        lease += 1;
        run(&mut c, check.id, HONEST_B, lease, |n| Ok(truth(n)));
    }
    end_leases(&mut c);
    // When the review window closes, every frame is accepted, each its first render, and
    // every render's payment is released.
    c.tick(1_000 + 1_000);
    let ends = end_leases(&mut c);
    assert_eq!(
        releases(&ends),
        [LeaseId(100), LeaseId(101), LeaseId(last_lease)]
    );
    assert!(c.is_done());
    for f in &c.frames {
        assert_eq!(f.state, FrameState::Accepted { render: 0 });
        assert_eq!(f.delivered().unwrap().output, Ok(truth(f.number)));
    }
}

/// Given three honest providers and a liar who renders task 1 with wrong pixels, and the
/// share set so that every frame is checked.
fn caught_liar() -> Coordinator {
    let mut c = Coordinator::new(
        FrameRange::new(1, 16).unwrap(),
        Policy {
            check_ppm: 1_000_000,
            ..policy()
        },
        7,
    );
    run(&mut c, 0, HONEST_A, 100, |n| Ok(truth(n)));
    run(&mut c, 1, LIAR, 101, |n| Ok(output(n, 1)));
    // Both leases end, their payments held for review.
    assert_eq!(holds(&end_leases(&mut c)), 2);
    // The check of the liar's frames runs on A, whose pixels differ.
    let liar_check = c.waiting().find(|t| t.avoid.contains(&LIAR)).unwrap().id;
    assert!(
        c.placed(liar_check, on(LIAR, 999), 0).is_err(),
        "never on the provider checked"
    );
    run(&mut c, liar_check, HONEST_A, 102, |n| Ok(truth(n)));
    // Then each mismatch goes to a referee who is neither.
    let referees: Vec<_> = c
        .waiting()
        .filter(|t| t.role == Role::Referee)
        .cloned()
        .collect();
    assert_eq!(referees.len(), 8);
    for r in &referees {
        assert!(r.avoid.contains(&LIAR) && r.avoid.contains(&HONEST_A));
    }
    // When the first referee renders the truth.
    run(&mut c, referees[0].id, HONEST_B, 103, |n| Ok(truth(n)));
    c
}

#[test]
fn a_provider_whose_pixels_a_referee_contradicts_fails_and_its_frames_go_elsewhere() {
    let c = caught_liar();
    // Then the liar failed verification, with the frame as evidence.
    assert_eq!(c.failed.iter().copied().collect::<Vec<_>>(), [LIAR]);
    assert_eq!(c.verdicts.len(), 1);
    assert_eq!(c.verdicts[0].frame, 9);
    // Its refereed frame is delivered from the checker's render.
    let f9 = c.frame(9).unwrap();
    assert_eq!(f9.delivered().unwrap().provider, HONEST_A);
    assert!(f9.confirmed);
    // Its other frames are rendered again, on anyone but it.
    let again: Vec<_> = c
        .waiting()
        .filter(|t| t.role == Role::Render)
        .cloned()
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].frames, (10..=16).collect::<Vec<_>>());
    assert!(again[0].avoid.contains(&LIAR));
    // And its held payment is rejected, never paid.
    let ends = c.payments_to_settle();
    let liar_end = ends.iter().find(|(_, l, _)| *l == LeaseId(101)).unwrap();
    assert!(matches!(liar_end.2, Ending::Reject { .. }));
    assert!(
        ends.iter().all(|(_, l, _)| *l != LeaseId(100)),
        "A's frames are in review"
    );
}

#[test]
fn a_rejection_the_engine_answers_too_late_is_recorded_as_the_lease_end_not_a_rejection() {
    let mut c = caught_liar();
    let (task, _, ending) = c
        .payments_to_settle()
        .into_iter()
        .find(|(_, l, _)| *l == LeaseId(101))
        .unwrap();
    assert!(matches!(ending, Ending::Reject { .. }));
    // When the engine answers that the payment was settled already (its hold ran out while
    // the job was down).
    c.settled(task, None).unwrap();
    // Then the task says the lease's end decided the payment: it was not rejected.
    assert_eq!(c.tasks[task as usize].settled, Some(Settled::LeaseEnd));
    assert!(c.payments_to_settle().iter().all(|(t, _, _)| *t != task));
    // And the liar still failed: its frames are rendered elsewhere.
    assert_eq!(c.failed.iter().copied().collect::<Vec<_>>(), [LIAR]);
}

#[test]
fn a_failed_provider_gets_no_task_of_the_job_again() {
    let mut c = caught_liar();
    let again = c.waiting().find(|t| t.role == Role::Render).unwrap().id;
    assert_eq!(
        c.placed(again, on(LIAR, 500), 0),
        Err(Refused::Avoided {
            task: again,
            provider: LIAR.0
        })
    );
    // The referees still waiting for frames the liar rendered are moot: those frames are
    // rendered afresh, and the rest of the job runs to the end on honest providers.
    run(&mut c, again, THIRD, 501, |n| Ok(truth(n)));
    let mut lease = 600;
    loop {
        let Some(t) = c.waiting().next().cloned() else {
            break;
        };
        let avoid = t.avoid.clone();
        let who = [HONEST_A, HONEST_B, THIRD]
            .into_iter()
            .find(|p| !avoid.contains(p));
        match who {
            Some(p) => run(&mut c, t.id, p, lease, |n| Ok(truth(n))),
            None => c.unplaceable(t.id, "no provider left").unwrap(),
        }
        lease += 1;
    }
    c.tick(10_000);
    end_leases(&mut c);
    assert!(c.is_done());
    for f in &c.frames {
        let r = f.delivered().unwrap();
        assert_ne!(r.provider, LIAR, "frame {}", f.number);
        assert_eq!(r.output, Ok(truth(f.number)));
    }
}

#[test]
fn a_frame_that_fails_is_retried_elsewhere_then_reported_failed() {
    let mut c = Coordinator::new(
        FrameRange::new(1, 1).unwrap(),
        Policy {
            max_attempts: 2,
            ..policy()
        },
        1,
    );
    run(&mut c, 0, HONEST_A, 100, |_| {
        Err("blender exited 139".into())
    });
    let retry = c.waiting().next().unwrap().clone();
    assert_eq!(retry.role, Role::Render);
    assert!(retry.avoid.contains(&HONEST_A));
    run(&mut c, retry.id, HONEST_B, 101, |_| {
        Err("blender exited 139".into())
    });
    let f = c.frame(1).unwrap();
    assert!(
        matches!(&f.state, FrameState::Failed { reason } if reason.contains("2 attempts") && reason.contains("139")),
        "{:?}",
        f.state
    );
    assert_eq!(f.renders.len(), 2);
    end_leases(&mut c);
    assert!(
        c.is_done(),
        "a failed frame is reported, not hidden or retried forever"
    );
}

#[test]
fn a_task_that_fails_whole_fails_each_of_its_frames_on_that_provider() {
    let mut c = job(3);
    c.placed(0, on(HONEST_A, 100), 0).unwrap();
    c.task_failed(0, "the node went silent", 500).unwrap();
    assert!(matches!(c.task(0).unwrap().state, TaskState::Failed { .. }));
    let retry = c.waiting().next().unwrap();
    assert_eq!(retry.frames, [1, 2, 3]);
    assert!(retry.avoid.contains(&HONEST_A));
    // An event for a task that is not running changes nothing.
    let before = c.clone();
    assert_eq!(c.task_failed(0, "again", 600), Err(Refused::NotRunning(0)));
    assert_eq!(c.placed(77, on(HONEST_A, 1), 0), Err(Refused::NoTask(77)));
    assert_eq!(c, before);
}

#[test]
fn a_buyer_rejection_is_checked_elsewhere_and_settled_by_the_pixels() {
    let mut c = Coordinator::new(
        FrameRange::new(1, 2).unwrap(),
        Policy {
            check_ppm: 0,
            ..policy()
        },
        3,
    );
    run(&mut c, 0, HONEST_A, 100, |n| Ok(truth(n)));
    // The provider's first task has one frame checked even at a share of zero.
    let check = c.waiting().next().unwrap().clone();
    assert_eq!(check.frames.len(), 1);
    run(&mut c, check.id, HONEST_B, 101, |n| Ok(truth(n)));
    let unchecked = if check.frames[0] == 1 { 2 } else { 1 };
    // When the buyer rejects the unchecked frame, another provider renders it.
    c.reject(unchecked, "the cube is the wrong colour").unwrap();
    let dispute = c.waiting().next().unwrap().clone();
    assert_eq!(dispute.role, Role::Check);
    assert_eq!(
        dispute.dispute.as_deref(),
        Some("the cube is the wrong colour")
    );
    assert!(dispute.avoid.contains(&HONEST_A));
    // A frame already under review cannot be rejected twice.
    assert_eq!(
        c.reject(unchecked, "again"),
        Err(Refused::NotInReview(unchecked))
    );
    // The same pixels from another provider settle it for the provider: accepted now.
    run(&mut c, dispute.id, THIRD, 102, |n| Ok(truth(n)));
    assert!(matches!(
        c.frame(unchecked).unwrap().state,
        FrameState::Accepted { .. }
    ));
    assert!(c.verdicts.is_empty());
    // After the window, a rejection is refused.
    c.tick(1_000_000);
    let other = if unchecked == 1 { 2 } else { 1 };
    assert_eq!(c.reject(other, "late"), Err(Refused::NotInReview(other)));
}

#[test]
fn a_check_nobody_else_can_run_delivers_the_frame_unchecked() {
    let mut c = job(1);
    run(&mut c, 0, HONEST_A, 100, |n| Ok(truth(n)));
    let check = c.waiting().next().unwrap().id;
    c.unplaceable(check, "no other provider offers this class")
        .unwrap();
    assert!(matches!(
        c.frame(1).unwrap().state,
        FrameState::Delivered { .. }
    ));
    c.tick(1_000_000);
    end_leases(&mut c);
    assert!(c.is_done());
}

#[test]
fn a_task_that_waits_past_its_policys_wait_goes_on_without_a_lease() {
    // Given one provider's delivered frame whose check nobody else takes up,
    let mut c = job(1);
    run(&mut c, 0, HONEST_A, 100, |n| Ok(truth(n)));
    let check = c.waiting().next().unwrap().id;
    // when the check has waited just under its wait, it still waits;
    c.tick(5_000);
    c.tick(5_000 + c.policy.check_within_ms - 1);
    assert_eq!(c.task(check).unwrap().state, TaskState::Waiting);
    // and once it has waited all of it, the frame is delivered unchecked.
    c.tick(5_000 + c.policy.check_within_ms);
    assert_eq!(
        c.task(check).unwrap().state,
        TaskState::Failed {
            reason: "no lease within 60 s".into()
        }
    );
    assert!(!c.frame(1).unwrap().confirmed);
    c.tick(1_000_000);
    end_leases(&mut c);
    assert!(c.is_done());

    // Given a render task no ask takes, its frames fail after the longer wait for renders.
    let mut c = job(2);
    c.tick(0);
    c.tick(c.policy.check_within_ms);
    assert_eq!(waiting(&c).len(), 1, "a render waits longer than a check");
    c.tick(c.policy.place_within_ms);
    assert!(c.waiting().next().is_none());
    assert!(c.frames.iter().all(|f| f.state
        == FrameState::Failed {
            reason: "no lease: no lease within 600 s".into()
        }));
    assert!(c.is_done());
}

#[test]
fn three_different_pictures_convict_nobody_and_the_frame_is_rendered_afresh() {
    let mut c = Coordinator::new(
        FrameRange::new(1, 1).unwrap(),
        Policy {
            check_ppm: 1_000_000,
            ..policy()
        },
        5,
    );
    run(&mut c, 0, HONEST_A, 100, |n| Ok(output(n, 1)));
    let check = c.waiting().next().unwrap().id;
    run(&mut c, check, HONEST_B, 101, |n| Ok(output(n, 2)));
    let referee = c.waiting().next().unwrap().id;
    run(&mut c, referee, THIRD, 102, |n| Ok(output(n, 3)));
    assert!(c.verdicts.is_empty());
    let again = c.waiting().next().unwrap();
    assert_eq!(again.role, Role::Render);
    assert!([HONEST_A, HONEST_B, THIRD]
        .iter()
        .all(|p| again.avoid.contains(p)));
}

#[test]
fn the_state_survives_its_stored_form() {
    let c = caught_liar();
    let stored = serde_json::to_string(&c).unwrap();
    let back: Coordinator = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, c);

    // A state stored before tasks had a wait for a lease reads with the default waits.
    let mut older: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let policy = older["policy"].as_object_mut().unwrap();
    policy.remove("place_within_ms").unwrap();
    policy.remove("check_within_ms").unwrap();
    for t in older["tasks"].as_array_mut().unwrap() {
        let t = t.as_object_mut().unwrap();
        t.remove("waiting_since").unwrap();
        t.remove("settled").unwrap();
    }
    let back: Coordinator = serde_json::from_value(older).unwrap();
    assert_eq!(back.policy, c.policy);
    assert_eq!(back.tasks.len(), c.tasks.len());
}

#[test]
fn a_provider_on_trial_is_paid_for_none_of_its_tasks_until_its_check_is_over() {
    // Given a provider's two tasks, the first with a frame in check (at a share of zero only
    // a provider's first task is checked) and the second's frames accepted already,
    let mut c = Coordinator::new(
        FrameRange::new(1, 16).unwrap(),
        Policy {
            check_ppm: 0,
            review_ms: 0,
            ..policy()
        },
        9,
    );
    run(&mut c, 0, HONEST_A, 100, |n| Ok(truth(n)));
    run(&mut c, 1, HONEST_A, 101, |n| Ok(truth(n)));
    c.tick(1_000);
    assert!(c
        .task(1)
        .unwrap()
        .frames
        .iter()
        .all(|n| matches!(c.frame(*n).unwrap().state, FrameState::Accepted { .. })));
    // when their leases end, neither payment is released while the check is pending;
    let ends = end_leases(&mut c);
    assert_eq!(holds(&ends), 2);
    assert!(releases(&ends).is_empty(), "{ends:?}");
    // once another provider's render confirms the checked frame, all three are paid.
    let check = c.waiting().next().unwrap().id;
    run(&mut c, check, HONEST_B, 102, |n| Ok(truth(n)));
    c.tick(2_000);
    let ends = end_leases(&mut c);
    assert_eq!(releases(&ends), [LeaseId(100), LeaseId(101), LeaseId(102)]);
    assert!(c.is_done());
}
