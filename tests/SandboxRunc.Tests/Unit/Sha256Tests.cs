using System.Text;
using SandboxRunc.Interop;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>The runtime's own SHA-256 names staging dirs and supervisor sockets: it must give OpenSSL's digest for every length.</summary>
public sealed class Sha256Tests
{
    [Fact]
    public void KnownAnswers()
    {
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Convert.ToHexStringLower(Sha256.Hash([])));
        Assert.Equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Convert.ToHexStringLower(Sha256.Hash("abc"u8)));
        Assert.Equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            Convert.ToHexStringLower(Sha256.Hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"u8)));
    }

    [Fact]
    public void SameAsOpenSslForEveryLengthAcrossBlockBoundaries()
    {
        var random = new Random(14);
        for (int length = 0; length < 300; length++)
        {
            var data = new byte[length];
            random.NextBytes(data);
            Assert.Equal(System.Security.Cryptography.SHA256.HashData(data), Sha256.Hash(data));
        }
        byte[] path = Encoding.UTF8.GetBytes("/run/docker/runtime-runc/moby/" + new string('a', 64));
        Assert.Equal(System.Security.Cryptography.SHA256.HashData(path), Sha256.Hash(path));
    }
}
