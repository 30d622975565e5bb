using SandboxRunc.Cli;
using SandboxRunc.Container;
using SandboxRunc.Oci;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>The pure parts of update, events and ps: sizes, durations, the resources merge, the ps filter.</summary>
public sealed class OpsParsingTests
{
    [Theory]
    [InlineData("67108864", 67108864L)]
    [InlineData("64m", 67108864L)]
    [InlineData("64M", 67108864L)]
    [InlineData("64MB", 67108864L)]
    [InlineData("64MiB", 67108864L)]
    [InlineData("1g", 1073741824L)]
    [InlineData("1.5k", 1536L)]
    [InlineData("512k", 524288L)]
    [InlineData("-1", -1L)]
    public void SizesAreReadLikeRunc(string value, long expected) =>
        Assert.Equal(expected, UpdateOperation.ParseSize("memory", value));

    [Theory]
    [InlineData("64q")]
    [InlineData("")]
    [InlineData("m")]
    [InlineData("-5")]
    [InlineData("1.2.3m")]
    public void BadSizesAreRefusedNamingTheFlag(string value)
    {
        var e = Assert.Throws<UsageException>(() => UpdateOperation.ParseSize("memory-swap", value));
        Assert.Contains("--memory-swap", e.Message);
    }

    [Theory]
    [InlineData("5s", 5000)]
    [InlineData("500ms", 500)]
    [InlineData("1m30s", 90000)]
    [InlineData("2", 2000)]
    public void DurationsAreGoStyle(string value, int ms) =>
        Assert.Equal(TimeSpan.FromMilliseconds(ms), Durations.Parse("interval", value));

    [Fact]
    public void BadDurationIsRefused() =>
        Assert.Throws<UsageException>(() => Durations.Parse("interval", "soon"));

    [Fact]
    public void MergeKeepsWhatTheUpdateDoesNotSet()
    {
        var saved = new Resources
        {
            Memory = new MemoryResources { Limit = 100, Swap = 200 },
            Cpu = new CpuResources { Shares = 512, Cpus = "0" },
        };
        // As docker sends it: zeros for what it does not change.
        var update = new Resources
        {
            Memory = new MemoryResources { Limit = 64, Swap = 0 },
            Cpu = new CpuResources { Shares = 0, Quota = 50000, Period = 100000 },
            Pids = new PidsResources { Limit = 10 },
        };
        var merged = UpdateOperation.Merge(saved, update);
        Assert.Equal(64, merged.Memory!.Limit);
        Assert.Equal(200, merged.Memory.Swap);
        Assert.Equal(512UL, merged.Cpu!.Shares);
        Assert.Equal("0", merged.Cpu.Cpus);
        Assert.Equal(50000, merged.Cpu.Quota);
        Assert.Equal(10, merged.Pids!.Limit);
    }

    [Fact]
    public void FlagsBuildTheRequest()
    {
        var flags = new Dictionary<string, string>
        {
            ["memory"] = "64m", ["memory-swap"] = "-1", ["cpu-share"] = "256", ["cpuset-cpus"] = "0-1",
            ["pids-limit"] = "20", ["blkio-weight"] = "300",
        };
        var r = UpdateOperation.FromFlags(flags.GetValueOrDefault);
        Assert.Equal(67108864, r.Memory!.Limit);
        Assert.Equal(-1, r.Memory.Swap);
        Assert.Equal(256UL, r.Cpu!.Shares);
        Assert.Equal("0-1", r.Cpu.Cpus);
        Assert.Equal(20, r.Pids!.Limit);
        Assert.Equal((ushort)300, r.BlockIo!.Weight);
    }

    [Fact]
    public void PsFilterKeepsTheHeaderAndTheContainersLines()
    {
        const string ps = "UID PID PPID CMD\nroot 1 0 init\nroot 42 1 sh\nroot 420 42 sleep\n";
        Assert.Equal("UID PID PPID CMD\nroot 42 1 sh\n", PsOperation.Filter(ps, [42]));
        Assert.Throws<RuntimeException>(() => PsOperation.Filter("UID CMD\nroot init\n", [1]));
        Assert.Equal("[1,2]", PsOperation.Json([1, 2]));
    }
}
