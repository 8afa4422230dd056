// Package bench measures the whole bindsync pipeline against the fake Twilio
// of twilio/twiliotest, next to a decode-only baseline measured in the same
// run against the same server, so that the cost of Arrow, Parquet, the
// checkpoint and publishing shows as the gap between two figures taken under
// equal conditions. It holds only benchmarks and quick sanity tests of them; run
// it with `make bench`.
//
// The benchmarks are:
//
//   - BenchmarkDecodeOnly: the Twilio client lists every user and pages
//     through every user's bindings with the pipeline's concurrency, decoding
//     each page into structs and dropping it. Nothing is faster than this
//     with this client and server: it is the ceiling.
//   - BenchmarkPipeline: worker.Run end to end (users, pages, Parquet parts,
//     checkpoint, publish to a local warehouse) into a fresh directory per
//     iteration.
//   - BenchmarkPipelineScaling: the pipeline on a small and a large world
//     (the large one with four times the users), to show invariant 4 of the
//     design: memory grows with concurrency and batch size, never with the
//     number of users or bindings.
//   - BenchmarkExport: against faketwilio running as a child process, so
//     that the server's CPU and memory are not the benchmark's, at page
//     sizes 50 and 1,000: DecodeJSON (net/http and encoding/json, the
//     usual client), DecodeFast (the same with bindjson), Pipeline
//     (worker.Run on a first snapshot) and PipelineNextDay (the night
//     after, whose changes compare with the day before). Beside
//     bindings/s, B/binding and peak-RSS-MiB it prints cpu-µs/binding, the
//     CPU time (user and system) this process spent per binding, and
//     fake-cpu-µs/binding, the server's: both processes share the cores,
//     so the rates of a run depend on the server's share, and the CPU per
//     binding is the figure that compares readers whatever that share.
//   - BenchmarkRunMemory (`make bench-memory`; skipped unless
//     BINDSYNC_BENCH_MEMORY_USERS is set): whole `bindsync run` processes
//     against faketwilio on 2 services of that many users (83,000: 5
//     million bindings), at page sizes 1,000 (first snapshot and next
//     night) and 50, printing each child's peak-RSS-MiB (ru_maxrss, the
//     executable's own pages included), bindings/s and cpu-s.
//
// How to read the figures:
//
//   - bindings/s is the bindings read per second of measured time. The gap
//     between BenchmarkPipeline and BenchmarkDecodeOnly is what exporting
//     costs; the fake server runs in the same process and shares the CPUs,
//     so both figures are lower bounds for a real deployment, whose limit is
//     Twilio's latency and rate limits rather than CPU.
//   - peak-heap-MiB is the highest heap (bytes of live objects and of
//     garbage not yet collected, runtime/metrics
//     "/memory/classes/heap/objects:bytes"), sampled every 5ms during an
//     iteration, minus the heap after forced collections just before it; the
//     largest over the iterations is reported. It is what the process needs
//     with the default GOGC, and moves with GOGC.
//   - peak-live-MiB is the same for the heap the collector found alive
//     ("/gc/heap/live:bytes"): what the pipeline really holds, steadier
//     from run to run than peak-heap-MiB, and the figure to compare in
//     BenchmarkPipelineScaling. Both peaks include the fake server's share,
//     which is about the same in every benchmark: compare figures of one
//     run, not absolute values across machines.
//   - B/binding is the heap allocated per binding read (client, server and
//     pipeline together); the difference between the two benchmarks is the
//     pipeline's own allocation per row. B/op and allocs/op of -benchmem
//     are the same allocations per whole run.
//   - parts is the number of Parquet part files one pipeline run committed.
//     BenchmarkPipeline keeps the default part size, so the whole world is
//     one part; its row groups fill up to the exporter's default bounds
//     (exporter.DefaultRowGroupRows rows or DefaultRowGroupBytes bytes),
//     and the writer buffers one of them at a time, so its peak is close
//     to the default configuration's worst case. BenchmarkPipelineScaling uses smaller
//     parts, so that both of its worlds fill several.
//
// In BenchmarkPipelineScaling, about equal peak-live-MiB for both sizes
// with four times the bindings is the invariant holding; a peak that grows
// in step with the world is a leak or an unbounded buffer. Expect some
// growth: the longer run meets more collections, so its highest sample
// tends to be a little higher, and the checkpoint keeps a small record of
// every finished user.
package bench
