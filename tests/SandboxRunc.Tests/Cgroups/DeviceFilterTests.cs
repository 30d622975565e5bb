using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Cgroups;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using R = SandboxRunc.Cgroups.DeviceFilter;

namespace SandboxRunc.Tests.Cgroups;

/// <summary>cgroup v2 device rules as an eBPF program: the decision (pure) and the program in the kernel.</summary>
public class DeviceFilterTests
{
    static DeviceCgroup D(bool allow, string? type = null, long? major = null, long? minor = null, string? access = null) =>
        new() { Allow = allow, Type = type, Major = major, Minor = minor, Access = access };

    // docker's shape: deny everything, then the default devices, then --device /dev/zero:/dev/x:r
    static readonly List<DeviceCgroup> Docker =
    [
        D(false, access: "rwm"),
        D(true, "c", 1, 3, "rwm"),       // null
        D(true, "c", 1, 5, "r"),         // zero, read only
        D(true, "c", null, null, "m"),   // mknod of any char device
        D(false, "c", 1, 3, "w"),        // ...then no writes to null after all
    ];
    static readonly List<R.Rule> Rules = R.Rules(Docker);

    [Fact] public void ReadOfAnAllowedDevice() => Assert.True(R.Allows(Rules, R.TypeChar, 1, 3, R.AccessRead));
    [Fact] public void TheLastMatchingRuleWins() => Assert.False(R.Allows(Rules, R.TypeChar, 1, 3, R.AccessWrite));
    [Fact] public void ADenyMatchesAnyAccessItDenies() => Assert.False(R.Allows(Rules, R.TypeChar, 1, 3, R.AccessRead | R.AccessWrite));
    [Fact] public void AnAllowMustGrantEveryAskedAccess() => Assert.False(R.Allows(Rules, R.TypeChar, 1, 5, R.AccessRead | R.AccessWrite));
    [Fact] public void WildcardsMatchAnyNumber() => Assert.True(R.Allows(Rules, R.TypeChar, 10, 229, R.AccessMknod));
    [Fact] public void WhatNoRuleAllowsIsDenied() => Assert.False(R.Allows(Rules, R.TypeBlock, 8, 0, R.AccessRead));
    [Fact] public void AnEmptyListDeniesEverything() => Assert.False(R.Allows([], R.TypeChar, 1, 3, R.AccessRead));
    [Fact] public void BadAccessIsRefused() => Assert.Throws<CgroupException>(() => R.Rules([D(true, "c", 1, 3, "rx")]));

    [Fact]
    public void AProgramWithoutACatchAllEndsInDeny()
    {
        var p = R.Program(R.Rules([D(true, "c", 1, 3, "rwm")]));
        Assert.Equal(0x95UL, p[^1] & 0xff);          // exit
        Assert.Equal(0xb7UL, p[^2] & 0xff);          // r0 = 0
        Assert.Equal(0UL, p[^2] >> 32);
    }

    [Fact]
    public void RulesHiddenByACatchAllAreNotEmitted()
    {
        // the verifier refuses unreachable instructions: "deny all" first in the spec is the last check
        var withCatchAll = R.Program(Rules);
        var withoutIt = R.Program(R.Rules(Docker.Skip(1).ToList()));
        Assert.Equal(withoutIt.Length, withCatchAll.Length); // catch-all block (2) replaces the default (2)
        Assert.Equal(2, R.Program(R.Rules([D(true, "c", 1, 3), D(false)])).Length - 6); // only the last rule is reachable
    }

    /// <summary>
    /// The program in the kernel: a cgroup of the unified hierarchy (cgroup v2, or the hybrid layout's
    /// /sys/fs/cgroup/unified), a shell moved into it, the kernel asked at each open.
    /// </summary>
    static string? Unified => File.Exists("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup"
        : File.Exists("/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : null;

    sealed class UnifiedHierarchyFact : FactAttribute
    {
        public UnifiedHierarchyFact()
        {
            if (Environment.UserName != "root") Skip = "needs root";
            else if (Unified is null) Skip = "no cgroup2 (unified) hierarchy is mounted: device programs attach to cgroup2 cgroups";
        }
    }

    [UnifiedHierarchyFact]
    public async Task TheKernelEnforcesTheRulesAndAnUpdateReplacesThem()
    {
        string dir = Path.Combine(Unified!, $"srt-devfilter-{Guid.NewGuid():N}"[..24]);
        Directory.CreateDirectory(dir);
        try
        {
            R.Apply(dir, Docker);
            // stderr and scratch output go to a file: writing /dev/null is one of the things refused here
            string scratch = Path.Combine(Path.GetTempPath(), $"srt-devfilter-{Guid.NewGuid():N}");
            string script = $"""
                exec 2>{scratch}
                echo $$ > {dir}/cgroup.procs
                cat /dev/null && echo null-read=ok
                (echo x > /dev/null) && echo null-write=ok
                head -c 1 /dev/zero > {scratch}.out && echo zero-read=ok
                (echo x > /dev/zero) && echo zero-write=ok
                (head -c 1 /dev/urandom > {scratch}.out) && echo urandom-read=ok
                echo end
                """;
            var r = await CliWrap.Cli.Wrap("/bin/sh").WithArguments(["-c", script]).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
            Assert.True(r.StandardOutput.Contains("end"), r.StandardOutput + r.StandardError);
            Assert.Contains("null-read=ok", r.StandardOutput);
            Assert.DoesNotContain("null-write=ok", r.StandardOutput);
            Assert.Contains("zero-read=ok", r.StandardOutput);
            Assert.DoesNotContain("zero-write=ok", r.StandardOutput);
            Assert.DoesNotContain("urandom-read=ok", r.StandardOutput);

            // update: urandom allowed now; exactly one program stays attached
            R.Apply(dir, [.. Docker, D(true, "c", 1, 9, "r")]);
            using (var fd = new SandboxRunc.Interop.SafeFd(SandboxRunc.Interop.Libc.open(dir, SandboxRunc.Interop.Libc.O_RDONLY | SandboxRunc.Interop.Libc.O_DIRECTORY, 0)))
                Assert.Single(R.AttachedIds(fd.Fd, dir));
            r = await CliWrap.Cli.Wrap("/bin/sh").WithArguments(["-c", script]).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
            Assert.Contains("urandom-read=ok", r.StandardOutput);
        }
        finally
        {
            foreach (var f in Directory.GetFiles(Path.GetTempPath(), "srt-devfilter-*")) File.Delete(f);
            for (int i = 0; i < 100 && Directory.Exists(dir); i++)
            {
                try { Directory.Delete(dir); } catch (IOException) { Thread.Sleep(20); }
            }
        }
    }
}
