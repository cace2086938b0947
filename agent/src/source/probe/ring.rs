//! Reading the kernel's records: each CPU stages its connection records and writes
//! them to the ring buffer in batches; before a drain the agent flushes every CPU
//! (the `flush_staged` program, run on each with `BPF_PROG_TEST_RUN`), reads the
//! ring, and applies the records in time order.

use aya::Ebpf;
use aya::maps::{Array, MapData, RingBuf};
use aya::programs::{RawTracePoint, RawTracePointRunOptions, TestRun as _};
use connwatch_common::BATCH_LEN;

use super::decode::{Pending, parse_record};
use crate::model::Event;
use crate::source::cgroup::CgroupPaths;

/// The program that writes a CPU's staged records to the ring buffer.
pub(super) const FLUSH_PROGRAM: &str = "flush_staged";

/// What the flush program returns: the CPU's records are in the ring buffer (or
/// it had none); the ring had no room for them. Else (1) a program of that CPU was
/// making a record.
const FLUSHED: u32 = 0;
const RING_FULL: u32 = 2;

/// What the agent says when it falls back to a ring write per record.
pub(super) const UNSTAGED: &str =
    "each record is written to the ring buffer at once, which costs the kernel more per connection";

/// How often a flush is run again on a CPU whose program was making a record
/// (it is done in well under a microsecond; each try is an interrupt there).
const FLUSH_TRIES: u32 = 100;

/// Whether the CPUs stage their records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Records are written at once, until a flush has worked on every CPU.
    Off,
    /// Each CPU writes its records `BATCH_LEN` at a time; every drain flushes them.
    On,
    /// A flush failed, or the flush program did not load: records are written at
    /// once from now on.
    Failed,
}

/// Turns the CPUs' record staging on once a flush works, and off for good if one
/// fails.
pub(super) struct Stager {
    /// How many records a CPU stages before it writes them (entry 0).
    stage_len: Array<MapData, u32>,
    state: State,
}

impl Stager {
    /// Staging stays off for good without the flush program (`flush_loaded`).
    pub(super) fn new(stage_len: Array<MapData, u32>, flush_loaded: bool) -> Stager {
        Stager {
            stage_len,
            state: if flush_loaded {
                State::Off
            } else {
                State::Failed
            },
        }
    }

    /// Writes the records each online CPU has staged to the ring buffer, so that
    /// every record stamped before the call is there once it returns; after the
    /// first flush that works on every CPU, turns staging on (`BATCH_LEN` records
    /// per ring write). If a flush fails, staging goes off for good (records are
    /// written at once; what a CPU holds goes with its next record) and this says
    /// so once.
    pub(super) fn flush(&mut self, ebpf: &Ebpf) {
        if self.state == State::Failed {
            return;
        }
        match flush_cpus(ebpf) {
            Ok(()) if self.state == State::Off => {
                match self.stage_len.set(0, BATCH_LEN as u32, 0) {
                    Ok(()) => self.state = State::On,
                    Err(e) => self.stop_staging(&format!("setting STAGE_LEN: {e}")),
                }
            }
            Ok(()) => {}
            Err(e) => self.stop_staging(&e),
        }
    }

    fn stop_staging(&mut self, why: &str) {
        self.state = State::Failed;
        if let Err(e) = self.stage_len.set(0, 0, 0) {
            log::warn!("could not turn record staging off: {e}");
        }
        log::warn!("flushing the CPUs' staged records failed ({why}): from now on {UNSTAGED}");
    }
}

/// Runs the flush program on every online CPU.
fn flush_cpus(ebpf: &Ebpf) -> Result<(), String> {
    let program: &RawTracePoint = ebpf
        .program(FLUSH_PROGRAM)
        .ok_or_else(|| format!("program {FLUSH_PROGRAM} missing"))?
        .try_into()
        .map_err(|e| format!("program {FLUSH_PROGRAM}: {e}"))?;
    let cpus = aya::util::online_cpus()
        .map_err(|(path, e)| format!("reading the online CPUs from {path}: {e}"))?;
    for cpu in cpus {
        let mut tries = 0;
        loop {
            let run = RawTracePointRunOptions {
                cpu: Some(cpu),
                ..RawTracePointRunOptions::new()
            };
            let status = program
                .test_run(run)
                .map_err(|e| format!("running {FLUSH_PROGRAM} on CPU {cpu}: {e}"))?
                .return_value;
            tries += 1;
            match status {
                FLUSHED => break,
                // The ring is full (the drain after this makes room): the
                // records stay staged until the next flush.
                RING_FULL => {
                    log::debug!("CPU {cpu}: the ring buffer had no room for its records");
                    break;
                }
                _ => {}
            }
            if tries == FLUSH_TRIES {
                // Its records come with the next drain, out of order if a
                // connection's other records were on another CPU.
                log::debug!("CPU {cpu} was making a record in {FLUSH_TRIES} flushes");
                break;
            }
        }
    }
    Ok(())
}

/// Reads the kernel's records from the ring buffer. The programs never wake it:
/// it is drained on a timer.
pub struct EventReader {
    ring: RingBuf<MapData>,
    /// Records read, waiting for those stamped before them (see [`Pending`]).
    pending: Pending,
    undecodable: u64,
    /// Local clients' cgroup paths, by cgroup id.
    cgroups: CgroupPaths,
}

impl EventReader {
    pub(super) fn new(ring: RingBuf<MapData>) -> EventReader {
        EventReader {
            ring,
            pending: Pending::default(),
            undecodable: 0,
            cgroups: CgroupPaths::default(),
        }
    }

    /// Reads every record in the ring buffer, and appends to `out`, in time order,
    /// those stamped before `before`; keeps the others for a later drain. Every
    /// CPU must have been flushed ([`super::Probe::flush_staged`]) after `before` was
    /// read.
    pub fn drain(&mut self, before: u64, out: &mut Vec<Event>) {
        while let Some(item) = self.ring.next() {
            if !parse_record(&item, |id| self.cgroups.path(id), self.pending.inbox()) {
                self.undecodable += 1;
            }
        }
        self.pending.release(before, out);
    }

    /// Records that could not be interpreted (should stay 0).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }
}
