//! Repeated activation of the built Voxsift CLAP plugin: no thread and no memory left behind.
//!
//! Its own test binary with one test, so no other test's threads or allocations are counted.

use std::collections::BTreeMap;
use std::time::Duration;
use voxsift_host_tests::*;

/// Activate/deactivate cycles measured after the warm-up.
const CYCLES: usize = 20;
/// Cycles before the memory baseline: ONNX Runtime, its environment and the allocator's
/// arenas are set up on first use and stay for the life of the process.
const WARM_UP: usize = 2;
/// Bound on VmRSS growth over the measured cycles (measured after `malloc_trim`). An active
/// DFN3 instance (three ONNX Runtime sessions, engine, rings) holds about 14 MB more than an
/// inactive one, so leaking even a tenth of that per cycle would exceed this over 20 cycles;
/// cycle-to-cycle noise after trimming is about 2.5 MB (see the printed per-cycle numbers).
const RSS_BOUND_KIB: u64 = 30 * 1024;
/// How long a joined thread may stay listed, or a new one may take to name itself.
const SETTLE: Duration = Duration::from_millis(500);

#[test]
fn activation_cycles_leave_no_thread_and_no_memory_behind() {
    let _env = lock_model(&Model::Dfn3);
    let mut p = Plugin::new().expect("loading and instantiating the Voxsift CLAP plugin");
    let rates = [44_100.0, 48_000.0, 96_000.0];
    let initial = threads().unwrap();
    assert_eq!(threads_named(WORKER_THREAD_NAME).unwrap(), 0);
    let mut baseline_rss = 0;
    let mut rss = Vec::new();
    let mut rss_active = Vec::new();
    let mut runtime_threads: Vec<(u32, String)> = Vec::new();
    let mut slowest_exit = Duration::ZERO;
    for i in 0..WARM_UP + CYCLES {
        let before = threads().unwrap();
        let rate = rates[i % rates.len()];
        let channels = 1 + i % 2;
        // Every fourth cycle is realtime and short: deactivated while the model may still be
        // loading.
        let mode = if i % 4 == 3 {
            Mode::Realtime
        } else {
            Mode::Offline
        };
        let latency = p
            .activate(Setup::new(rate, 512, channels, mode))
            .expect("activate") as usize;
        // The worker: the first new thread named voxsift-worker (it names itself on start;
        // ONNX Runtime's first-use thread, started from it, comes later with a higher id).
        let workers = || -> Vec<u32> {
            let now = threads().unwrap_or_default();
            new_threads(&before, &now)
                .into_iter()
                .filter(|(_, n)| n == WORKER_THREAD_NAME)
                .map(|(t, _)| t)
                .collect()
        };
        let (found, _) = wait_until(SETTLE, || !workers().is_empty());
        assert!(
            found,
            "cycle {i}: no {WORKER_THREAD_NAME} thread while active"
        );
        let worker = workers()[0];
        // Offline waits for the model, so such a cycle loads and runs it.
        let n = (rate * 0.3) as usize + latency;
        let x = vec![test_signal(n, rate, i as u64); channels];
        let y = p.process(&x, &Run::blocks(&[512])).expect("process");
        ensure_finite(&y).expect("finite output");
        if mode == Mode::Offline {
            // The model ran: the output is not the delayed input.
            let dry = delayed(&x[0], latency);
            assert!(
                max_abs_diff(&y[0], &dry) > 1e-3,
                "cycle {i}: DFN3 did not run"
            );
        }
        rss_active.push(vm_rss_kib().unwrap());
        p.deactivate();

        let (gone, took) = wait_until(SETTLE, || {
            threads().is_ok_and(|t: BTreeMap<u32, String>| !t.contains_key(&worker))
        });
        assert!(
            gone,
            "cycle {i}: the worker thread {worker} is still there {SETTLE:?} after deactivate"
        );
        slowest_exit = slowest_exit.max(took);
        assert_eq!(
            threads_named(WORKER_THREAD_NAME).unwrap(),
            0,
            "cycle {i}: a {WORKER_THREAD_NAME} thread is left after deactivate"
        );
        let after = threads().unwrap();
        let added = new_threads(&before, &after);
        let removed = new_threads(&after, &before);
        assert!(
            removed.is_empty(),
            "cycle {i}: threads vanished: {removed:?}"
        );
        if i == 0 {
            // ONNX Runtime's process-wide thread, started once on a thread the plugin names
            // "voxsift-ort"; nothing else may stay.
            assert!(
                added.len() <= 1 && added.iter().all(|(_, n)| n == "voxsift-ort"),
                "cycle 0 left threads behind: {added:?}"
            );
            runtime_threads = added;
        } else {
            assert!(
                added.is_empty(),
                "cycle {i} left threads behind: {added:?} (before: {before:?})"
            );
        }
        // Measure what is still allocated, not what malloc keeps cached for reuse.
        trim_heap();
        let r = vm_rss_kib().unwrap();
        rss.push(r);
        if i + 1 == WARM_UP {
            baseline_rss = r;
        }
    }
    let last = *rss.last().expect("cycles ran");
    let growth = last.saturating_sub(baseline_rss);
    let final_threads = threads().unwrap();
    println!("threads before the first activation: {initial:?}");
    println!(
        "threads after {} cycles: {final_threads:?}",
        WARM_UP + CYCLES
    );
    println!("process-wide thread(s) ONNX Runtime started on first use: {runtime_threads:?}");
    println!("longest a joined worker stayed listed in /proc/self/task: {slowest_exit:?}");
    println!("VmRSS while active, after processing (KiB): {rss_active:?}");
    println!("VmRSS after each deactivation (KiB): {rss:?}");
    println!(
        "VmRSS after {WARM_UP} cycles {baseline_rss} KiB, after {} cycles {last} KiB, growth \
         {growth} KiB (bound {RSS_BOUND_KIB} KiB)",
        WARM_UP + CYCLES
    );
    assert_eq!(
        final_threads.len(),
        initial.len() + runtime_threads.len(),
        "the thread count did not return to the baseline"
    );
    assert!(
        growth < RSS_BOUND_KIB,
        "VmRSS grew by {growth} KiB over {CYCLES} activation cycles"
    );
    drop(p);
    let (gone, _) = wait_until(SETTLE, || {
        threads().is_ok_and(|t| new_threads(&initial, &t).len() <= runtime_threads.len())
    });
    assert!(gone, "threads left after the instance was destroyed");
}
