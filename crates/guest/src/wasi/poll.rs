//! `poll_oneoff` with clock subscriptions: real sleeps, logged.
//!
//! A sleep observes time, so it is an input like a clock reading. The first
//! attempt of a call fixes each subscription's deadline (a relative timeout
//! takes one logged reading of its clock). The primary then waits until the
//! earliest deadline has passed on its live clock — the guest parks there
//! (unwound with Asyncify, on its fiber without), and the run reports
//! [`crate::RunOutcome::Sleeping`] with the time left — and finally takes one
//! logged reading per clock involved: the subscriptions whose deadline that
//! reading reached fire. The waiting itself is not logged (the live clock is
//! consulted without a record); a replay never waits and takes the same
//! readings from the log, so it fires the same subscriptions at the same fuel
//! position. fd subscriptions are `ENOSYS`.
//!
//! The deadlines of a call under way live in the host state, not in a
//! checkpoint: a guest waiting in a sleep is not checkpointed (it is when the
//! sleep ends, or at the call's entry, where a requested unwind stops it
//! before any deadline is fixed).

use super::{
    asyncify_entry, fuel_consumed, lock, memory, park, range, write_bytes, Errno, HostCaller,
    Shared, ERRNO_INVAL, ERRNO_NOSYS, ERRNO_SUCCESS,
};
use crate::record::InputLog;
use crate::unwind::UnwindReason;
use understudy_types::limits::GUEST_POLL_SUBSCRIPTIONS_MAX;

const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;
/// `subclockflags::subscription_clock_abstime`: the timeout is a deadline.
const ABSOLUTE_TIME: u16 = 1;

/// One clock subscription of a call under way, its deadline fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    userdata: u64,
    clock_id: u32,
    /// In the guest's terms (the monotonic clock with its offset).
    nanos: u64,
}

/// What one attempt of a call found.
enum Attempt {
    /// The call is over with this errno (events written when it succeeded).
    Done(i32),
    /// No subscription is due: wait this many nanoseconds at most.
    Wait(u64),
}

/// `poll_oneoff`: see the module's docs.
pub(super) async fn poll_oneoff<L: InputLog>(
    caller: &mut HostCaller<'_, L>,
    (input, output, count, nevents): (i32, i32, i32, i32),
) -> wasmtime::Result<i32> {
    if asyncify_entry(caller)? {
        return Ok(0);
    }
    loop {
        match attempt(caller, input, output, count, nevents)? {
            Attempt::Done(code) => return Ok(code),
            Attempt::Wait(nanos) => {
                let shared = caller.data().shared.clone();
                lock(&shared).sleep_nanos = Some(nanos);
                if park(caller, UnwindReason::Sleep).await? {
                    return Ok(0);
                }
            }
        }
    }
}

fn attempt<L: InputLog>(
    caller: &mut HostCaller<'_, L>,
    input: i32,
    output: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<Attempt> {
    let shared = caller.data().shared.clone();
    lock(&shared).sleep_nanos = None;
    let subscriptions = match read_subscriptions(caller, input, output, count, nevents) {
        Ok(subscriptions) => subscriptions,
        Err(code) => return Ok(Attempt::Done(code)),
    };
    let fuel = fuel_consumed(caller);
    let mut guard = lock(&shared);
    let deadlines = match guard.pending_poll.clone() {
        Some(deadlines) => deadlines,
        None => {
            let mut readings = Readings::default();
            let mut deadlines = Vec::with_capacity(subscriptions.len());
            for subscription in &subscriptions {
                let nanos = if subscription.flags & ABSOLUTE_TIME != 0 {
                    subscription.timeout
                } else {
                    let now = readings.read(&mut guard, subscription.clock_id, fuel)?;
                    now.saturating_add(subscription.timeout)
                };
                deadlines.push(Deadline {
                    userdata: subscription.userdata,
                    clock_id: subscription.clock_id,
                    nanos,
                });
            }
            guard.pending_poll = Some(deadlines.clone());
            deadlines
        }
    };
    let mut wait = u64::MAX;
    for deadline in &deadlines {
        let raw = guard.source_nanos(deadline.clock_id, deadline.nanos);
        wait = wait.min(guard.inputs.sleep_remaining(deadline.clock_id, raw));
    }
    if wait > 0 {
        return Ok(Attempt::Wait(wait));
    }
    let mut readings = Readings::default();
    let mut fired = Vec::new();
    for deadline in &deadlines {
        let now = readings.read(&mut guard, deadline.clock_id, fuel)?;
        if now >= deadline.nanos {
            fired.push(deadline.userdata);
        }
    }
    if fired.is_empty() {
        // A clock that went back (the realtime clock may): wait again. A
        // replay takes the same readings and comes here too.
        return Ok(Attempt::Wait(1));
    }
    guard.pending_poll = None;
    drop(guard);
    Ok(Attempt::Done(write_events(caller, output, nevents, &fired)))
}

/// A clock subscription as the guest wrote it.
struct Subscription {
    userdata: u64,
    clock_id: u32,
    timeout: u64,
    flags: u16,
}

/// The subscriptions at `input`, checked, with the event and count areas.
fn read_subscriptions<L>(
    caller: &mut HostCaller<'_, L>,
    input: i32,
    output: i32,
    count: i32,
    nevents: i32,
) -> Result<Vec<Subscription>, Errno> {
    let count = count as u32 as usize;
    if count == 0 || count > GUEST_POLL_SUBSCRIPTIONS_MAX {
        return Err(ERRNO_INVAL);
    }
    let memory = memory(caller)?;
    let data = memory.data(&*caller);
    range(data, output, count * EVENT_BYTES)?;
    range(data, nevents, 4)?;
    let bytes = &data[range(data, input, count * SUBSCRIPTION_BYTES)?];
    let mut subscriptions = Vec::with_capacity(count);
    for subscription in bytes.chunks_exact(SUBSCRIPTION_BYTES) {
        let u64_at =
            |at: usize| u64::from_le_bytes(subscription[at..at + 8].try_into().unwrap_or_default());
        if subscription[8] != 0 {
            return Err(ERRNO_NOSYS);
        }
        let clock_id = u32::from_le_bytes(subscription[16..20].try_into().unwrap_or_default());
        if clock_id > 3 {
            return Err(ERRNO_INVAL);
        }
        subscriptions.push(Subscription {
            userdata: u64_at(0),
            clock_id,
            timeout: u64_at(24),
            flags: u16::from_le_bytes([subscription[40], subscription[41]]),
        });
    }
    Ok(subscriptions)
}

/// Writes one clock event per fired subscription and their count.
fn write_events<L>(
    caller: &mut HostCaller<'_, L>,
    output: i32,
    nevents: i32,
    fired: &[u64],
) -> i32 {
    let memory = match memory(caller) {
        Ok(memory) => memory,
        Err(code) => return code,
    };
    let data = memory.data_mut(caller);
    for (index, userdata) in fired.iter().enumerate() {
        // userdata, then error 0 and type 0 (clock): the rest stays zero.
        let mut event = [0u8; EVENT_BYTES];
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        let at = output.wrapping_add((index * EVENT_BYTES) as i32);
        if let Err(code) = write_bytes(data, at, &event) {
            return code;
        }
    }
    match write_bytes(data, nevents, &(fired.len() as u32).to_le_bytes()) {
        Ok(()) => ERRNO_SUCCESS,
        Err(code) => code,
    }
}

/// Logged readings of one attempt, at most one per clock.
#[derive(Default)]
struct Readings(Vec<(u32, u64)>);

impl Readings {
    fn read<L: InputLog>(
        &mut self,
        shared: &mut Shared<L>,
        clock_id: u32,
        fuel: u64,
    ) -> wasmtime::Result<u64> {
        if let Some((_, nanos)) = self.0.iter().find(|(id, _)| *id == clock_id) {
            return Ok(*nanos);
        }
        let nanos = shared.guest_clock(clock_id, fuel)?;
        self.0.push((clock_id, nanos));
        Ok(nanos)
    }
}
