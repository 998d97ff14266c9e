//! The `syncgate` binary: everything lives in the library; see `cli.rs`.
//!
//! The allocator is jemalloc (docs/performance.md, the "jemalloc" point of "How a pass-through
//! request is served"). Measured for issue 13 against the system allocator: ~8 % less CPU per
//! pass-through request and ~11 KiB instead of ~17 KiB of resident memory per idle keep-alive
//! connection, because it keeps its bookkeeping outside the blocks: the parts of hyper's 8 KiB
//! per-connection buffers that an idle connection never wrote stay unbacked. mimalloc was measured too, and cost more per idle connection than the system
//! allocator.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation:
/// - one background thread gives memory freed after a burst back to the system within about a
///   second (`dirty_decay_ms`; jemalloc's default is ten seconds, and only when some thread
///   allocates), so resident memory follows the load down;
/// - allocations of 512 KiB and more (request bodies read whole, under the body budget) come from
///   an arena that returns them to the system as soon as they are freed. With jemalloc's default
///   (8 MiB) a burst of hostile bodies left freed buffers resident and the peak rose by up to 40
///   MiB over the budget (`hostile::concurrent_oversized_bodies_share_one_memory_budget`). Not
///   lower: hyper's read buffer grows to ~400 KiB while a large body streams, and at 128 KiB
///   those buffers went to the system and back on every read (1 MiB bodies cost 1.5-2.3x the
///   CPU).
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 94] = b"background_thread:true,max_background_threads:1,\
dirty_decay_ms:1000,oversize_threshold:524288\0";

fn main() -> std::process::ExitCode {
    syncgate::cli::main()
}
