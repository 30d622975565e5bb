using SandboxRunc.Interop;
using SandboxRunc.Policy;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// The search for another name (hard link) of a file in a directory tree, which the policy runs on a bind
/// source when the engine socket has more than one name: found below, not found, and unknown when bounded.
/// </summary>
public sealed class HardLinkSearchTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("srt-hlink-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    (string Original, FileId Id) Fixture()
    {
        string original = Path.Combine(_dir, "a", "file");
        Directory.CreateDirectory(Path.GetDirectoryName(original)!);
        File.WriteAllText(original, "x");
        Directory.CreateDirectory(Path.Combine(_dir, "b", "deep", "er"));
        using (var ln = System.Diagnostics.Process.Start("ln", [original, Path.Combine(_dir, "b", "deep", "er", "link")])!)
        {
            ln.WaitForExit();
            Assert.Equal(0, ln.ExitCode);
        }
        Directory.CreateDirectory(Path.Combine(_dir, "c"));
        for (int i = 0; i < 50; i++) File.WriteAllText(Path.Combine(_dir, "c", $"f{i}"), "");
        File.CreateSymbolicLink(Path.Combine(_dir, "c", "to-b"), Path.Combine(_dir, "b"));
        var links = HostPlacesReader.Links(original)!.Value;
        Assert.Equal(2ul, links.Links);
        return (original, links.Id);
    }

    [Fact]
    public void ALinkDeepBelowIsFound() =>
        Assert.True(HostPlacesReader.HoldsLinkOf([Path.Combine(_dir, "b")], Fixture().Id));

    [Fact]
    public void ATreeWithoutOneSaysSo_AndSymlinksAreNotFollowed() =>
        Assert.False(HostPlacesReader.HoldsLinkOf([Path.Combine(_dir, "c")], Fixture().Id));

    [Fact]
    public void AnyRootCounts() =>
        Assert.True(HostPlacesReader.HoldsLinkOf([Path.Combine(_dir, "c"), Path.Combine(_dir, "b")], Fixture().Id));

    [Fact]
    public void ASearchThatCannotFinishIsUnknown() =>
        Assert.Null(HostPlacesReader.HoldsLinkOf([Path.Combine(_dir, "c")], Fixture().Id, maxEntries: 10));

    [Fact]
    public void ARootOnAnotherFilesystemIsNotWalked() =>
        Assert.False(HostPlacesReader.HoldsLinkOf(["/proc/self"], Fixture().Id, maxEntries: 10));
}
