// The runtime under test is Linux-only (as the runtime itself declares): so are its tests.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
