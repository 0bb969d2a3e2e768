//! The pure core of a render job: which frames each task renders, which frames another
//! provider renders again, who referees a mismatch, who failed, which leases end and how.
//! No I/O, no clock: the caller (the API's render loop) buys the leases, runs the tasks,
//! fetches the frames, and tells the coordinator what happened, with the time.
//!
//! A task is one lease's job: a set of frames for one provider (a lease runs one job). A
//! frame is rendered by a `Render` task; a share of the frames of every render task (at
//! least one for each provider used) is rendered again by a `Check` task on another
//! provider; pixels that differ go to a `Referee` task on a third. The provider on the
//! losing side of a referee's render failed verification: its leases of the job end
//! rejected (slashed, not a clean stop), every frame it delivered that no other provider
//! confirmed is rendered again elsewhere, and it never gets another task of the job.
//!
//! A task's lease ends as soon as its job is over, so its GPU is free for other tasks (with
//! one GPU per provider, the check of one provider's frames needs the GPU of another, whose
//! own frames wait for their check too); its payment stays held for review
//! (`Command::StopLeaseHeld`) until every frame it rendered or checked is past its check
//! and the buyer's review ([`Coordinator::payments_to_settle`]): released then, or rejected
//! when its provider failed.

use std::collections::{BTreeMap, BTreeSet};

use contract::{AccountId, LeaseId, NodeId};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::pixels::PixelDigest;
use crate::spec::FrameRange;
use crate::RenderError;

/// How a job is split and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The share of each render task's frames rendered again elsewhere, in millionths
    /// (50,000: 5%); at least one frame of every provider's first task is, whatever the share.
    pub check_ppm: u32,
    /// How many failed renders a frame may have before it is reported failed.
    pub max_attempts: u32,
    /// The most frames one task renders.
    pub frames_per_task: u32,
    /// How long the buyer may reject a delivered frame, in milliseconds.
    pub review_ms: i64,
    /// How far two renders' samples may be apart and still match (steps of 8 bits; 0:
    /// identical pixels, for engines that are bit-exact, as Cycles on the CPU is).
    pub tolerance: u8,
    /// How long a render task may wait for a lease, in milliseconds, before its frames fail
    /// (no ask at the job's price, or every provider left is one it must avoid).
    #[serde(default = "Policy::default_place_within_ms")]
    pub place_within_ms: i64,
    /// How long a check or referee task may wait for a lease on another provider: a check
    /// then delivers its frames unchecked, a referee's frames are rendered afresh. Shorter
    /// than a render's wait: with one provider in the market no check can ever be placed.
    #[serde(default = "Policy::default_check_within_ms")]
    pub check_within_ms: i64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            check_ppm: 50_000,
            max_attempts: 3,
            frames_per_task: 8,
            review_ms: 10 * 60 * 1000,
            tolerance: 0,
            place_within_ms: Policy::default_place_within_ms(),
            check_within_ms: Policy::default_check_within_ms(),
        }
    }
}

impl Policy {
    fn default_place_within_ms() -> i64 {
        10 * 60 * 1000
    }

    fn default_check_within_ms() -> i64 {
        60 * 1000
    }

    /// How long a task's payment may be held for review at most: the review window, plus
    /// the waits of the checks and re-renders that may come before it, plus an hour of
    /// rendering, at most `Command::MAX_PAYMENT_HOLD_MS`. Past it the market pays the
    /// provider whatever the job's state, so no buyer's job holds a provider's pay for long.
    pub fn hold_ms(&self) -> u64 {
        let ms = self
            .review_ms
            .saturating_add(self.place_within_ms)
            .saturating_add(self.check_within_ms.saturating_mul(2))
            .saturating_add(3_600_000);
        (ms.max(1) as u64).min(contract::Command::MAX_PAYMENT_HOLD_MS)
    }

    pub fn validate(&self) -> Result<(), RenderError> {
        let bad = |what: &str| Err(RenderError::Policy(what.into()));
        if self.check_ppm > 1_000_000 {
            return bad("the checked share is at most 100%");
        }
        if !(1..=10).contains(&self.max_attempts) {
            return bad("attempts per frame: 1 to 10");
        }
        if !(1..=1_000).contains(&self.frames_per_task) {
            return bad("frames per task: 1 to 1000");
        }
        if !(0..=7 * 24 * 3_600_000).contains(&self.review_ms) {
            return bad("the review window: up to 7 days");
        }
        if !(1_000..=7 * 24 * 3_600_000).contains(&self.place_within_ms)
            || !(1_000..=7 * 24 * 3_600_000).contains(&self.check_within_ms)
        {
            return bad("the wait for a lease: 1 second to 7 days");
        }
        Ok(())
    }
}

/// What a task is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The frames' first render.
    Render,
    /// Frames rendered again on another provider to check the first render.
    Check,
    /// A third provider's render of frames whose first two renders differ.
    Referee,
}

/// The lease a task runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub lease: LeaseId,
    pub provider: AccountId,
    pub node: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskState {
    /// It needs a lease.
    Waiting,
    /// Its job runs on its lease.
    Running,
    /// Its frames came back (each rendered or failed).
    Finished,
    /// It did not run, or ran and came back with nothing.
    Failed { reason: String },
}

/// How a task's lease, or its held payment, is to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "ending")]
pub enum Ending {
    /// Its job is over: the buyer stops the lease (charged to now) and holds the payment
    /// for review, for at most `hold_ms` ([`Policy::hold_ms`]).
    Hold { hold_ms: u64 },
    /// Its frames are past their checks and the buyer's review: the held payment is paid.
    Release,
    /// Its provider failed verification: the work is rejected, a provider failure (of the
    /// running lease, or of the held payment).
    Reject { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: u32,
    pub role: Role,
    /// Sorted, distinct.
    pub frames: Vec<u32>,
    /// Providers that must not run it.
    pub avoid: BTreeSet<AccountId>,
    pub placement: Option<Placement>,
    /// When it got its lease (Unix milliseconds).
    pub placed_at: i64,
    /// Bids made for it that got no lease (the next bid's attempt number).
    pub buys: u32,
    /// When it was first seen waiting for a lease (the first [`Coordinator::tick`] after
    /// it was queued), Unix milliseconds.
    #[serde(default)]
    pub waiting_since: Option<i64>,
    pub state: TaskState,
    /// The lease has ended (after [`Coordinator::leases_to_end`] said so).
    pub lease_ended: bool,
    /// How its lease's payment ended (after [`Coordinator::payments_to_settle`] said so, or
    /// with the lease's rejection); `None` while it runs or is held.
    #[serde(default)]
    pub settled: Option<Settled>,
    /// The UUIDs of the GPUs its job ran on, as the node's signed report named them.
    pub gpus: Vec<String>,
    /// A buyer's rejection this check answers.
    pub dispute: Option<String>,
}

/// How a task's payment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    Paid,
    /// Its provider failed verification: not paid, slashed.
    Rejected,
    /// The engine settled it before the job did: the hold ran out, or the lease ended on its
    /// own (its term, its node), so the lease's end decided the payment, not this job.
    LeaseEnd,
}

/// A frame's file, as a provider delivered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The file's cid in the blob store.
    pub cid: String,
    pub pixels: PixelDigest,
}

/// One render of a frame, by one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Render {
    pub task: u32,
    pub role: Role,
    pub provider: AccountId,
    pub output: Result<Output, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum FrameState {
    /// A render task will render it.
    Rendering {
        task: u32,
    },
    /// Render `render` (an index into the frame's renders) is being checked by `task`.
    Checking {
        render: usize,
        task: u32,
        at: i64,
    },
    /// Render `render` is delivered at `at`, checked or not; accepted when the buyer's
    /// review window closes.
    Delivered {
        render: usize,
        at: i64,
    },
    Accepted {
        render: usize,
    },
    /// Every attempt failed (or none could be placed); the last reason.
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub number: u32,
    pub state: FrameState,
    pub renders: Vec<Render>,
    /// Renders of it that failed or were wrong.
    pub failures: u32,
    /// Providers that failed it: they do not render it again.
    pub avoid: BTreeSet<AccountId>,
    /// Whether another provider rendered the same pixels as the delivered render.
    pub confirmed: bool,
}

impl Frame {
    /// The render the buyer gets, once delivered.
    pub fn delivered(&self) -> Option<&Render> {
        match self.state {
            FrameState::Checking { render, .. }
            | FrameState::Delivered { render, .. }
            | FrameState::Accepted { render } => self.renders.get(render),
            _ => None,
        }
    }

    pub fn is_over(&self) -> bool {
        matches!(
            self.state,
            FrameState::Accepted { .. } | FrameState::Failed { .. }
        )
    }
}

/// A provider that failed verification: the evidence is the frame's three renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub provider: AccountId,
    pub frame: u32,
    pub reason: String,
}

/// Why an event was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no task {0}")]
    NoTask(u32),
    #[error("task {0} does not wait for a lease")]
    NotWaiting(u32),
    #[error("task {0} is not running")]
    NotRunning(u32),
    #[error("provider {provider} may not run task {task}")]
    Avoided { task: u32, provider: u64 },
    #[error("no frame {0} in this job")]
    NoFrame(u32),
    #[error("frame {0} is not delivered and in its review window")]
    NotInReview(u32),
}

/// A render job's state: its frames and tasks, and who failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinator {
    pub policy: Policy,
    /// Mixes into the choice of checked frames, so a provider cannot tell which they are.
    pub seed: u64,
    pub frames: Vec<Frame>,
    pub tasks: Vec<Task>,
    /// Providers that failed verification in this job.
    pub failed: BTreeSet<AccountId>,
    /// Providers at least one of whose frames was checked.
    pub checked: BTreeSet<AccountId>,
    pub verdicts: Vec<Verdict>,
}

impl Coordinator {
    /// A job's frames in render tasks of at most `policy.frames_per_task`.
    pub fn new(frames: FrameRange, policy: Policy, seed: u64) -> Coordinator {
        let mut c = Coordinator {
            policy,
            seed,
            frames: frames
                .iter()
                .map(|number| Frame {
                    number,
                    state: FrameState::Rendering { task: u32::MAX },
                    renders: Vec::new(),
                    failures: 0,
                    avoid: BTreeSet::new(),
                    confirmed: false,
                })
                .collect(),
            tasks: Vec::new(),
            failed: BTreeSet::new(),
            checked: BTreeSet::new(),
            verdicts: Vec::new(),
        };
        let all: Vec<u32> = frames.iter().collect();
        c.add_tasks(Role::Render, &all, &BTreeSet::new(), None);
        c
    }

    pub fn task(&self, id: u32) -> Option<&Task> {
        self.tasks.get(id as usize)
    }

    pub fn frame(&self, number: u32) -> Option<&Frame> {
        let first = self.frames.first()?.number;
        self.frames.get(number.checked_sub(first)? as usize)
    }

    fn frame_mut(&mut self, number: u32) -> &mut Frame {
        let first = self.frames[0].number;
        &mut self.frames[(number - first) as usize]
    }

    /// Tasks that need a lease, with the providers each must avoid.
    pub fn waiting(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.state == TaskState::Waiting)
    }

    /// Every frame accepted or failed, and every lease ended and settled.
    pub fn is_done(&self) -> bool {
        self.frames.iter().all(Frame::is_over)
            && self
                .tasks
                .iter()
                .all(|t| t.placement.is_none() || (t.lease_ended && t.settled.is_some()))
            && self.waiting().next().is_none()
    }

    /// A bid for waiting `task` got no lease (or one it may not use): the next is another
    /// attempt.
    pub fn not_filled(&mut self, task: u32) {
        if let Some(t) = self.tasks.get_mut(task as usize) {
            t.buys += 1;
        }
    }

    /// `task` runs on `placement`'s lease from `now`.
    pub fn placed(&mut self, task: u32, placement: Placement, now: i64) -> Result<(), Refused> {
        let t = self.tasks.get(task as usize).ok_or(Refused::NoTask(task))?;
        if t.state != TaskState::Waiting {
            return Err(Refused::NotWaiting(task));
        }
        if t.avoid.contains(&placement.provider) || self.failed.contains(&placement.provider) {
            return Err(Refused::Avoided {
                task,
                provider: placement.provider.0,
            });
        }
        let t = &mut self.tasks[task as usize];
        t.placement = Some(placement);
        t.placed_at = now;
        t.state = TaskState::Running;
        Ok(())
    }

    /// No lease could be had for a waiting `task` (no provider left that it may use, or the
    /// price is too low): its frames go on without it. A render's frames fail; a check's
    /// frames are delivered unchecked; a referee's frames are rendered afresh.
    pub fn unplaceable(&mut self, task: u32, reason: &str) -> Result<(), Refused> {
        let t = self.tasks.get(task as usize).ok_or(Refused::NoTask(task))?;
        if t.state != TaskState::Waiting {
            return Err(Refused::NotWaiting(task));
        }
        let (role, frames) = (t.role, t.frames.clone());
        self.tasks[task as usize].state = TaskState::Failed {
            reason: reason.into(),
        };
        for n in frames {
            let f = self.frame_mut(n);
            match f.state {
                FrameState::Rendering { task: t } if t == task => {
                    f.state = FrameState::Failed {
                        reason: format!("no lease: {reason}"),
                    }
                }
                FrameState::Checking {
                    render,
                    task: t,
                    at,
                } if t == task => {
                    if role == Role::Check {
                        // Nobody else can check it: delivered as it is, unchecked.
                        f.state = FrameState::Delivered { render, at };
                    } else {
                        // Two renders disagree and nobody can referee: neither is trusted.
                        f.failures += 1;
                        self.queue_again(n, &format!("no referee: {reason}"));
                    }
                }
                _ => {}
            }
        }
        self.requeue();
        Ok(())
    }

    /// A running task's job came back: `results` by frame (a frame missing from them is a
    /// failed render), on `gpus`. `same` compares two outputs (their pixels within the
    /// job's tolerance; the caller decodes them). Frames that need it are checked, refereed
    /// or rendered again; a verdict may fail a provider.
    pub fn finished(
        &mut self,
        task: u32,
        mut results: BTreeMap<u32, Result<Output, String>>,
        gpus: Vec<String>,
        now: i64,
        same: &mut dyn FnMut(&Output, &Output) -> bool,
    ) -> Result<(), Refused> {
        let t = self.tasks.get(task as usize).ok_or(Refused::NoTask(task))?;
        if t.state != TaskState::Running {
            return Err(Refused::NotRunning(task));
        }
        let placement = t.placement.expect("a running task has its lease");
        let (role, frames) = (t.role, t.frames.clone());
        let t = &mut self.tasks[task as usize];
        t.state = TaskState::Finished;
        t.gpus = gpus;
        let mut delivered = Vec::new();
        let mut to_referee = Vec::new();
        for n in frames {
            let output = results
                .remove(&n)
                .unwrap_or_else(|| Err("the job left no file for this frame".into()));
            let render = Render {
                task,
                role,
                provider: placement.provider,
                output,
            };
            match role {
                Role::Render => self.rendered(n, render, now, &mut delivered),
                Role::Check => self.checked(n, task, render, &mut to_referee, same),
                Role::Referee => self.refereed(n, task, render, now, same),
            }
        }
        let to_check = self.sample(&delivered, placement.provider);
        if !to_check.is_empty() {
            let mut avoid: BTreeSet<_> = [placement.provider].into();
            avoid.extend(self.failed.iter().copied());
            self.add_tasks(Role::Check, &to_check, &avoid, None);
            self.checked.insert(placement.provider);
        }
        for (n, avoid) in to_referee {
            self.add_tasks(Role::Referee, &[n], &avoid, None);
        }
        self.requeue();
        Ok(())
    }

    /// A running task's job failed as a whole (it crashed before writing, its lease ended
    /// early, its outputs never came): every frame of it failed on that provider.
    pub fn task_failed(&mut self, task: u32, reason: &str, now: i64) -> Result<(), Refused> {
        let t = self.tasks.get(task as usize).ok_or(Refused::NoTask(task))?;
        if t.state != TaskState::Running {
            return Err(Refused::NotRunning(task));
        }
        let results = t
            .frames
            .iter()
            .map(|n| (*n, Err(reason.to_string())))
            .collect();
        self.finished(task, results, Vec::new(), now, &mut |_, _| false)?;
        self.tasks[task as usize].state = TaskState::Failed {
            reason: reason.into(),
        };
        Ok(())
    }

    /// The buyer rejects a frame in its review window: another provider renders it; if its
    /// pixels differ, a referee decides, as for any check.
    pub fn reject(&mut self, number: u32, reason: &str) -> Result<(), Refused> {
        let f = self.frame(number).ok_or(Refused::NoFrame(number))?;
        let FrameState::Delivered { render, .. } = f.state else {
            return Err(Refused::NotInReview(number));
        };
        let mut avoid: BTreeSet<_> = [f.renders[render].provider].into();
        avoid.extend(self.failed.iter().copied());
        self.add_tasks(Role::Check, &[number], &avoid, Some(reason));
        Ok(())
    }

    /// Tasks that waited past their policy's wait for a lease go on without one
    /// ([`Coordinator::unplaceable`]); frames whose review window closed by `now` are
    /// accepted.
    pub fn tick(&mut self, now: i64) {
        let (place, check) = (self.policy.place_within_ms, self.policy.check_within_ms);
        let mut expired = Vec::new();
        for t in &mut self.tasks {
            if t.state == TaskState::Waiting {
                let since = *t.waiting_since.get_or_insert(now);
                let wait = if t.role == Role::Render { place } else { check };
                if now.saturating_sub(since) >= wait {
                    expired.push((t.id, wait));
                }
            }
        }
        for (task, wait) in expired {
            // An earlier one's frames may have made this one unneeded: then it is not waiting.
            let _ = self.unplaceable(task, &format!("no lease within {} s", wait / 1_000));
        }
        let window = self.policy.review_ms;
        for f in &mut self.frames {
            if let FrameState::Delivered { render, at } = f.state {
                if now >= at.saturating_add(window) {
                    f.state = FrameState::Accepted { render };
                }
            }
        }
    }

    /// Leases to end now, and how: a task's lease ends once its job is over, holding the
    /// payment for review; at once, rejected, when its provider failed.
    pub fn leases_to_end(&self) -> Vec<(u32, LeaseId, Ending)> {
        let mut out = Vec::new();
        for t in &self.tasks {
            let Some(p) = t.placement else { continue };
            if t.lease_ended {
                continue;
            }
            if let Some(reason) = self.failure_of(p.provider) {
                out.push((t.id, p.lease, Ending::Reject { reason }));
            } else if matches!(t.state, TaskState::Finished | TaskState::Failed { .. }) {
                let hold_ms = self.policy.hold_ms();
                out.push((t.id, p.lease, Ending::Hold { hold_ms }));
            }
        }
        out
    }

    /// Held payments to settle now, and how: released once no frame the task rendered or
    /// checked waits for a check or the buyer's review, and no render of its provider in the
    /// job is being checked (a provider on trial is paid for none of its tasks, so one whose
    /// first check fails loses the payments of every task it ran meanwhile); rejected when
    /// its provider failed.
    pub fn payments_to_settle(&self) -> Vec<(u32, LeaseId, Ending)> {
        let on_trial: BTreeSet<AccountId> = self
            .frames
            .iter()
            .filter_map(|f| match f.state {
                FrameState::Checking { render, .. } => Some(f.renders[render].provider),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for t in &self.tasks {
            let Some(p) = t.placement else { continue };
            if !t.lease_ended || t.settled.is_some() {
                continue;
            }
            if let Some(reason) = self.failure_of(p.provider) {
                out.push((t.id, p.lease, Ending::Reject { reason }));
            } else if !self.under_review(t) && !on_trial.contains(&p.provider) {
                out.push((t.id, p.lease, Ending::Release));
            }
        }
        out
    }

    /// Why `provider` failed verification in this job, if it did.
    fn failure_of(&self, provider: AccountId) -> Option<String> {
        self.failed.contains(&provider).then(|| {
            self.verdicts
                .iter()
                .find(|v| v.provider == provider)
                .map(|v| v.reason.clone())
                .unwrap_or_default()
        })
    }

    /// Whether a frame of `t` may still prove its work wrong: a render of it delivered and
    /// in its check or review, or (for a check or a referee) its frame still in a check.
    fn under_review(&self, t: &Task) -> bool {
        t.frames.iter().any(|n| {
            let f = self.frame(*n).expect("a task's frames are the job's");
            match f.state {
                FrameState::Checking { render, .. } => {
                    t.role != Role::Render || f.renders[render].task == t.id
                }
                FrameState::Delivered { render, .. } => f.renders[render].task == t.id,
                _ => false,
            }
        })
    }

    /// The lease of `task` ended: as [`Coordinator::leases_to_end`] asked with `ending`, or
    /// (`None`) by the engine before that ask reached it. A rejected lease's payment is
    /// settled with it, and so is one the engine ended first.
    pub fn lease_ended(&mut self, task: u32, ending: Option<&Ending>) -> Result<(), Refused> {
        let t = self
            .tasks
            .get_mut(task as usize)
            .ok_or(Refused::NoTask(task))?;
        t.lease_ended = true;
        t.settled = match ending {
            None => Some(Settled::LeaseEnd),
            Some(Ending::Reject { .. }) => Some(Settled::Rejected),
            Some(Ending::Hold { .. } | Ending::Release) => None,
        };
        if t.state == TaskState::Running {
            t.state = TaskState::Failed {
                reason: "its lease ended first".into(),
            };
        }
        Ok(())
    }

    /// The held payment of `task` ended: as [`Coordinator::payments_to_settle`] asked with
    /// `ending`, or (`None`) by the engine first (the hold ran out, or the lease was already
    /// settled otherwise), whatever this job asked.
    pub fn settled(&mut self, task: u32, ending: Option<&Ending>) -> Result<(), Refused> {
        let t = self
            .tasks
            .get_mut(task as usize)
            .ok_or(Refused::NoTask(task))?;
        t.settled = Some(match ending {
            None => Settled::LeaseEnd,
            Some(Ending::Reject { .. }) => Settled::Rejected,
            Some(Ending::Hold { .. } | Ending::Release) => Settled::Paid,
        });
        Ok(())
    }

    /// A render task's frame came back: delivered (and listed in `delivered`) or failed.
    fn rendered(&mut self, n: u32, render: Render, now: i64, delivered: &mut Vec<u32>) {
        let ok = render.output.is_ok();
        let provider = render.provider;
        let f = self.frame_mut(n);
        if f.state != (FrameState::Rendering { task: render.task }) {
            // Its provider failed meanwhile and the frame went to another task.
            return;
        }
        f.renders.push(render);
        if !ok {
            self.failed_render(n, provider);
            return;
        }
        f.state = FrameState::Delivered {
            render: f.renders.len() - 1,
            at: now,
        };
        delivered.push(n);
    }

    /// Which of `frames` (one task's, delivered by `provider`) are checked: those whose
    /// hash under the job's seed falls in the share, and the lowest-hashing one when the
    /// provider has had none checked yet.
    fn sample(&self, frames: &[u32], provider: AccountId) -> Vec<u32> {
        let score = |n: u32| {
            let mut h = Sha256::new();
            h.update(self.seed.to_be_bytes());
            h.update(n.to_be_bytes());
            let d: [u8; 32] = h.finalize().into();
            u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000
        };
        let mut keep: Vec<u32> = frames
            .iter()
            .copied()
            .filter(|n| score(*n) < self.policy.check_ppm)
            .collect();
        if keep.is_empty() && !self.checked.contains(&provider) {
            keep.extend(frames.iter().copied().min_by_key(|n| score(*n)));
        }
        keep
    }

    /// A check task's frame came back: its pixels agree with the delivered render's or a
    /// referee is needed.
    fn checked(
        &mut self,
        n: u32,
        task: u32,
        render: Render,
        to_referee: &mut Vec<(u32, BTreeSet<AccountId>)>,
        same: &mut dyn FnMut(&Output, &Output) -> bool,
    ) {
        let disputed = self.tasks[task as usize].dispute.is_some();
        let failed = self.failed.clone();
        let f = self.frame_mut(n);
        let FrameState::Checking {
            render: first,
            task: checking,
            at,
        } = f.state
        else {
            return;
        };
        if checking != task {
            return;
        }
        let checker = render.provider;
        let output = render.output.clone();
        f.renders.push(render);
        let original = f.renders[first].clone();
        let mut avoid: BTreeSet<_> = [original.provider, checker].into();
        avoid.extend(failed);
        let Ok(output) = output else {
            // The checker could not render it: another provider checks it.
            self.add_tasks(Role::Check, &[n], &avoid, None);
            return;
        };
        let first_output = original
            .output
            .as_ref()
            .expect("a delivered render has output");
        if same(first_output, &output) {
            f.confirmed = true;
            f.state = if disputed {
                // The buyer's rejection is answered: the same pixels from another provider.
                FrameState::Accepted { render: first }
            } else {
                FrameState::Delivered { render: first, at }
            };
        } else {
            to_referee.push((n, avoid));
        }
    }

    /// A referee's render came back: the provider it disagrees with failed verification.
    fn refereed(
        &mut self,
        n: u32,
        task: u32,
        render: Render,
        now: i64,
        same: &mut dyn FnMut(&Output, &Output) -> bool,
    ) {
        let f = self.frame_mut(n);
        let FrameState::Checking {
            render: first,
            task: refereeing,
            at,
        } = f.state
        else {
            return;
        };
        if refereeing != task {
            return;
        }
        let referee = render.provider;
        let result = render.output.clone();
        f.renders.push(render);
        // The check this referee answers is the last other render of the frame.
        let second = (first + 1..f.renders.len() - 1)
            .rev()
            .find(|i| f.renders[*i].role == Role::Check && f.renders[*i].output.is_ok())
            .expect("a referee follows a check that rendered");
        let (a, b) = (f.renders[first].clone(), f.renders[second].clone());
        let Ok(output) = result else {
            let mut avoid: BTreeSet<_> = [a.provider, b.provider, referee].into();
            avoid.extend(self.failed.iter().copied());
            self.add_tasks(Role::Referee, &[n], &avoid, None);
            return;
        };
        let (a_out, b_out) = (
            a.output.clone().expect("rendered"),
            b.output.clone().expect("rendered"),
        );
        let with_a = same(&a_out, &output);
        let with_b = same(&b_out, &output);
        let f = self.frame_mut(n);
        if with_a && !with_b {
            f.confirmed = true;
            f.state = FrameState::Delivered { render: first, at };
            self.fail_provider(b.provider, n);
        } else if with_b && !with_a {
            f.confirmed = true;
            f.state = FrameState::Delivered {
                render: second,
                at: now,
            };
            self.fail_provider(a.provider, n);
        } else {
            // Three different pictures (or a tolerance too wide to tell): nobody is
            // proven wrong; the frame is rendered afresh by others.
            f.failures += 1;
            f.avoid.extend([a.provider, b.provider, referee]);
            self.queue_again(n, "three providers rendered three different pictures");
        }
    }

    /// A render of `n` by `provider` failed: rendered again elsewhere, or failed for good.
    fn failed_render(&mut self, n: u32, provider: AccountId) {
        let f = self.frame_mut(n);
        f.failures += 1;
        f.avoid.insert(provider);
        let reason = f
            .renders
            .last()
            .and_then(|r| r.output.as_ref().err().cloned())
            .unwrap_or_default();
        self.queue_again(n, &reason);
    }

    /// Puts `n` back in the queue for a render task, or fails it after its attempts.
    fn queue_again(&mut self, n: u32, reason: &str) {
        let max = self.policy.max_attempts;
        let f = self.frame_mut(n);
        f.confirmed = false;
        f.state = if f.failures >= max {
            FrameState::Failed {
                reason: format!("{} attempts failed; the last: {reason}", f.failures),
            }
        } else {
            // `requeue` gives it a task.
            FrameState::Rendering { task: u32::MAX }
        };
    }

    /// `provider` failed verification on frame `n`.
    fn fail_provider(&mut self, provider: AccountId, n: u32) {
        if !self.failed.insert(provider) {
            return;
        }
        self.verdicts.push(Verdict {
            provider,
            frame: n,
            reason: format!(
                "frame {n}: a referee on a third provider rendered the other provider's pixels"
            ),
        });
        // Its running tasks are void; its unconfirmed deliveries are rendered again.
        for i in 0..self.tasks.len() {
            let t = &self.tasks[i];
            if t.state == TaskState::Running && t.placement.is_some_and(|p| p.provider == provider)
            {
                self.tasks[i].state = TaskState::Failed {
                    reason: "its provider failed verification".into(),
                };
            }
        }
        for i in 0..self.frames.len() {
            let f = &self.frames[i];
            let n = f.number;
            let by_it = f.delivered().is_some_and(|r| r.provider == provider);
            let task = match f.state {
                FrameState::Rendering { task } | FrameState::Checking { task, .. } => Some(task),
                _ => None,
            };
            let its_task = task
                .and_then(|t| self.tasks[t as usize].placement)
                .is_some_and(|p| p.provider == provider);
            if (by_it && !f.confirmed)
                || (its_task && matches!(f.state, FrameState::Rendering { .. }))
            {
                let f = &mut self.frames[i];
                f.failures += 1;
                f.avoid.insert(provider);
                self.queue_again(n, "its provider failed verification");
            } else if let (true, FrameState::Checking { .. }) = (its_task, &f.state) {
                // It was checking another provider's render: someone else checks it.
                let role = self.tasks[task.expect("checking") as usize].role;
                let mut avoid = f.avoid.clone();
                avoid.extend(f.renders.iter().map(|r| r.provider));
                avoid.extend(self.failed.iter().copied());
                self.add_tasks(role, &[n], &avoid, None);
            }
        }
    }

    /// Gives every frame waiting for a render task one, grouped by the providers they avoid.
    fn requeue(&mut self) {
        let mut groups: BTreeMap<BTreeSet<AccountId>, Vec<u32>> = BTreeMap::new();
        for f in &self.frames {
            if f.state == (FrameState::Rendering { task: u32::MAX }) {
                let mut avoid = f.avoid.clone();
                avoid.extend(self.failed.iter().copied());
                groups.entry(avoid).or_default().push(f.number);
            }
        }
        for (avoid, frames) in groups {
            self.add_tasks(Role::Render, &frames, &avoid, None);
        }
        // A waiting task no frame waits for any more (a referee of frames that are rendered
        // afresh) never gets a lease.
        let mut wanted = BTreeSet::new();
        for f in &self.frames {
            if let FrameState::Rendering { task } | FrameState::Checking { task, .. } = f.state {
                wanted.insert(task);
            }
        }
        for t in &mut self.tasks {
            if t.state == TaskState::Waiting && !wanted.contains(&t.id) {
                t.state = TaskState::Failed {
                    reason: "no longer needed".into(),
                };
            }
        }
    }

    /// New waiting tasks of `role` over `frames`, at most `frames_per_task` each; a render
    /// task's frames are marked as its.
    fn add_tasks(
        &mut self,
        role: Role,
        frames: &[u32],
        avoid: &BTreeSet<AccountId>,
        dispute: Option<&str>,
    ) -> Vec<u32> {
        let mut ids = Vec::new();
        for chunk in frames.chunks(self.policy.frames_per_task as usize) {
            let id = u32::try_from(self.tasks.len()).expect("fewer than 4 billion tasks");
            self.tasks.push(Task {
                id,
                role,
                frames: chunk.to_vec(),
                avoid: avoid.clone(),
                placement: None,
                placed_at: 0,
                buys: 0,
                waiting_since: None,
                state: TaskState::Waiting,
                lease_ended: false,
                settled: None,
                gpus: Vec::new(),
                dispute: dispute.map(str::to_string),
            });
            for n in chunk {
                let f = self.frame_mut(*n);
                f.state = match (role, &f.state) {
                    (Role::Render, _) => FrameState::Rendering { task: id },
                    (
                        _,
                        FrameState::Checking { render, at, .. }
                        | FrameState::Delivered { render, at },
                    ) => FrameState::Checking {
                        render: *render,
                        task: id,
                        at: *at,
                    },
                    (_, other) => other.clone(),
                };
            }
            ids.push(id);
        }
        ids
    }
}
