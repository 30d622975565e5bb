// systemd's D-Bus API (org.freedesktop.systemd1.Manager) as far as the cgroup driver needs it, over
// Tmds.DBus.Protocol (NativeAOT-compatible, no reflection): start a transient unit, change its properties,
// stop it, and wait for the jobs these calls queue. Calls are made on the system bus, as runc does.
using System.Collections.Concurrent;
using Tmds.DBus.Protocol;

namespace SandboxRunc.Cgroups;

/// <summary>A unit property for StartTransientUnit / SetUnitProperties: a name and a D-Bus variant.</summary>
public readonly record struct UnitProperty(string Name, VariantValue Value);

internal sealed class SystemdBus : IDisposable
{
    const string Service = "org.freedesktop.systemd1", ObjectPath = "/org/freedesktop/systemd1", Manager = "org.freedesktop.systemd1.Manager";
    const string SystemBusSocket = "/run/dbus/system_bus_socket";
    static readonly TimeSpan JobTimeout = TimeSpan.FromSeconds(60);

    readonly DBusConnection _connection;
    readonly ConcurrentDictionary<string, string> _finished = new();
    readonly SemaphoreSlim _jobDone = new(0);
    IDisposable? _watch;

    SystemdBus(DBusConnection connection) => _connection = connection;

    /// <summary>Connects to the system bus and listens for finished jobs; a clear error when there is no systemd to talk to.</summary>
    public static SystemdBus Connect()
    {
        string address = Environment.GetEnvironmentVariable("DBUS_SYSTEM_BUS_ADDRESS") is { Length: > 0 } a ? a : $"unix:path={SystemBusSocket}";
        var connection = new DBusConnection(address);
        var bus = new SystemdBus(connection);
        try
        {
            connection.ConnectAsync().GetAwaiter().GetResult();
            bus._watch = connection.AddMatchAsync(
                new MatchRule { Type = MessageType.Signal, Interface = Manager, Member = "JobRemoved", Path = ObjectPath },
                (Message m, object? _) =>
                {
                    var r = m.GetBodyReader();
                    r.ReadUInt32();
                    string job = r.ReadObjectPathAsString();
                    r.ReadString();
                    return (Job: job, Result: r.ReadString());
                },
                (Exception? e, (string Job, string Result) v, object? _, object? __) =>
                {
                    if (e is not null) return;
                    bus._finished[v.Job] = v.Result;
                    bus._jobDone.Release();
                }, ObserverFlags.None, null, null, emitOnCapturedContext: false).AsTask().GetAwaiter().GetResult();
            // Without a subscriber systemd may not send job signals at all.
            bus.Call("Subscribe", null, null);
            return bus;
        }
        catch (Exception e) when (e is not CgroupException)
        {
            bus.Dispose();
            throw new CgroupException($"cgroup: the systemd cgroup driver needs systemd's D-Bus API on the system bus ({address}): {e.Message}");
        }
    }

    /// <summary>Starts a transient unit and waits until systemd has done it.</summary>
    public void StartTransientUnit(string name, IReadOnlyList<UnitProperty> properties)
    {
        string job = Call("StartTransientUnit", "ssa(sv)a(sa(sv))", (ref MessageWriter w) =>
        {
            w.WriteString(name);
            w.WriteString("replace");
            WriteProperties(ref w, properties);
            var aux = w.WriteArrayStart(DBusType.Struct);
            w.WriteArrayEnd(aux);
        }, readJob: true)!;
        WaitJob(job, $"start {name}");
    }

    /// <summary>Changes properties of a running unit (runtime only: nothing persisted under /etc).</summary>
    public void SetUnitProperties(string name, IReadOnlyList<UnitProperty> properties)
    {
        if (properties.Count == 0) return;
        Call("SetUnitProperties", "sba(sv)", (ref MessageWriter w) =>
        {
            w.WriteString(name);
            w.WriteBool(true);
            WriteProperties(ref w, properties);
        });
    }

    /// <summary>Stops a unit and waits; a unit systemd does not know (gone already) is fine.</summary>
    public void StopUnit(string name)
    {
        string? job;
        try { job = Call("StopUnit", "ss", (ref MessageWriter w) => { w.WriteString(name); w.WriteString("replace"); }, readJob: true); }
        catch (CgroupException e) when (e.Message.Contains("org.freedesktop.systemd1.NoSuchUnit") || e.Message.Contains("not loaded")) { return; }
        if (job is not null) WaitJob(job, $"stop {name}");
        try { Call("ResetFailedUnit", "s", (ref MessageWriter w) => w.WriteString(name)); }
        catch (CgroupException) { /* not failed: nothing to reset */ }
    }

    delegate void BodyWriter(ref MessageWriter writer);

    string? Call(string method, string? signature, BodyWriter? body, bool readJob = false)
    {
        MessageBuffer Message()
        {
            var w = _connection.GetMessageWriter();
            try
            {
                w.WriteMethodCallHeader(destination: Service, path: ObjectPath, @interface: Manager, member: method, signature: signature);
                body?.Invoke(ref w);
                return w.CreateMessage();
            }
            finally { w.Dispose(); }
        }
        try
        {
            if (readJob)
                return _connection.CallMethodAsync(Message(), (Message m, object? _) => m.GetBodyReader().ReadObjectPathAsString()).GetAwaiter().GetResult();
            _connection.CallMethodAsync(Message()).GetAwaiter().GetResult();
            return null;
        }
        catch (DBusErrorReplyException e)
        {
            throw new CgroupException($"cgroup: systemd {method}: {e.ErrorName}: {e.ErrorMessage}");
        }
        catch (Exception e) when (e is DBusExceptionBase or IOException or ObjectDisposedException)
        {
            throw new CgroupException($"cgroup: systemd {method}: {e.Message}");
        }
    }

    static void WriteProperties(ref MessageWriter w, IReadOnlyList<UnitProperty> properties)
    {
        var array = w.WriteArrayStart(DBusType.Struct);
        foreach (var p in properties)
        {
            w.WriteStructureStart();
            w.WriteString(p.Name);
            w.WriteVariant(p.Value);
        }
        w.WriteArrayEnd(array);
    }

    void WaitJob(string job, string what)
    {
        var deadline = DateTime.UtcNow + JobTimeout;
        while (true)
        {
            if (_finished.TryRemove(job, out var result))
            {
                if (result != "done") throw new CgroupException($"cgroup: systemd could not {what}: the job ended \"{result}\" (see journalctl -u {what.Split(' ').Last()})");
                return;
            }
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero) throw new CgroupException($"cgroup: systemd did not {what} within {JobTimeout.TotalSeconds:0} s");
            _jobDone.Wait(left < TimeSpan.FromMilliseconds(200) ? left : TimeSpan.FromMilliseconds(200));
        }
    }

    public void Dispose()
    {
        _watch?.Dispose();
        _connection.Dispose();
        _jobDone.Dispose();
    }
}
