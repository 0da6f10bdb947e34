using BenchmarkDotNet.Running;

// Run all: dotnet run -c Release --project bench/Doorbell.Benchmarks -- --filter '*'
// One class: ... -- --filter '*Iotlb*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
