using BenchmarkDotNet.Running;

// Run all: dotnet run -c Release --project bench/Doorbell.Benchmarks -- --filter '*'
// One class: ... -- --filter '*Iotlb*'
// Loaded machine: ... -- --cpu-time SmmuV3Benchmarks.DmaTranslateIotlbHitPerPage (thread CPU time per op)
if (args.Length > 0 && args[0] == "--cpu-time") return Doorbell.Benchmarks.CpuTimeRunner.Run(args);
// SMMUv2 vs SMMUv3 hit, interleaved, in thread CPU time (for loaded machines): ... -- side-by-side smmuv2 [ROUNDS]
if (args.Length > 0 && args[0] == "side-by-side") return Doorbell.Benchmarks.SideBySide.Run(args);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
