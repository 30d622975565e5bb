using SandboxRunc.Interop;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// Removing a tree someone else writes to, by fd (Interop/DirTree): symbolic links are removed, never followed (to a
/// directory or a file outside), a tree deeper than PATH_MAX is removed whole, and files of every type go.
/// </summary>
public sealed class DirTreeTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("srt-dirtree-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) DirTree.Remove(_dir);
    }

    [Fact]
    public void Remove_RemovesLinksWithoutFollowingThem()
    {
        string outside = Path.Combine(_dir, "outside");
        Directory.CreateDirectory(Path.Combine(outside, "sub"));
        File.WriteAllText(Path.Combine(outside, "keep"), "x");
        File.WriteAllText(Path.Combine(outside, "sub", "keep"), "x");
        string tree = Path.Combine(_dir, "tree");
        Directory.CreateDirectory(Path.Combine(tree, "a", "b"));
        File.WriteAllText(Path.Combine(tree, "a", "b", "f"), "x");
        File.CreateSymbolicLink(Path.Combine(tree, "a", "to-dir"), outside);
        File.CreateSymbolicLink(Path.Combine(tree, "a", "b", "to-file"), Path.Combine(outside, "keep"));
        File.CreateSymbolicLink(Path.Combine(tree, "dangling"), "/nonexistent");
        using (var fifo = System.Diagnostics.Process.Start("mkfifo", [Path.Combine(tree, "a", "fifo")])!) fifo.WaitForExit();

        Assert.Null(DirTree.Remove(tree));

        Assert.False(Directory.Exists(tree));
        Assert.True(File.Exists(Path.Combine(outside, "keep")));
        Assert.True(File.Exists(Path.Combine(outside, "sub", "keep")));
    }

    [Fact]
    public void Remove_RemovesATreeDeeperThanPathMax()
    {
        string tree = Path.Combine(_dir, "deep");
        Directory.CreateDirectory(tree);
        string level = new('d', 200);
        // 30 levels of 200 bytes, made relative to each level's fd (no path that long can be named at once).
        int fd = Libc.open(tree, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        for (int i = 0; i < 30; i++)
        {
            Assert.Equal(0, Libc.mkdirat(fd, level, 0x1ed));
            int next = DirTree.OpenDir(fd, level);
            Libc.close(fd);
            Assert.True(next >= 0);
            fd = next;
        }
        Libc.close(fd);
        Assert.True(Path.Combine(tree, string.Join('/', Enumerable.Repeat(level, 30))).Length > 4096);

        Assert.Null(DirTree.Remove(tree));
        Assert.False(Directory.Exists(tree));
    }

    [Fact]
    public void Remove_RemovesATreeDeeperThanItsFdBound()
    {
        string tree = Path.Combine(_dir, "deeper");
        Directory.CreateDirectory(tree);
        int fd = Libc.open(tree, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        for (int i = 0; i < DirTree.MaxDepth * 3 + 7; i++)
        {
            Assert.Equal(0, Libc.mkdirat(fd, "d", 0x1ed));
            int next = DirTree.OpenDir(fd, "d");
            Libc.close(fd);
            fd = next;
        }
        Libc.close(fd);

        Assert.Null(DirTree.Remove(tree));
        Assert.False(Directory.Exists(tree));
    }

    [Fact]
    public void Remove_OfWhatIsNotThere_IsDone() => Assert.Null(DirTree.Remove(Path.Combine(_dir, "none")));
}
