using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// What a container that mounts the engine socket may ask the engine, beyond the command list: pure functions over
/// the request (path, query, JSON body), used by the socket proxy. A container created through the socket is judged
/// by the very policy `create` runs (<see cref="IsolationPolicy.Decide"/>, over an OCI spec made from the request:
/// its namespaces, its bind mounts, its labels, its image) and runs under this runtime whatever it asked; the
/// runtime judges it again when dockerd starts it, so this is the early, clear refusal (no container left behind),
/// not the only one.
/// </summary>
public static class SocketRequestPolicy
{
    /// <summary>dockerd below API 1.24 lets `start` replace a container's whole host configuration (runtime, namespaces, binds).</summary>
    public const string MinimumApiVersion = "1.24";

    /// <summary>Refuses API versions below 1.24 (<see cref="MinimumApiVersion"/>).</summary>
    public static void CheckVersion(string? version)
    {
        if (version is null) return; // dockerd's own version
        if (!Version.TryParse(version.Contains('.') ? version : version + ".0", out var v) || v < Version.Parse(MinimumApiVersion))
            throw new PolicyException($"docker API version {version} is refused through a mounted socket (the minimum is {MinimumApiVersion}: " +
                                      "older versions let `start` change a container's host configuration)");
    }

    /// <summary>
    /// The path a request's target names, percent-decoded as dockerd decodes it before routing. A path that is not
    /// clean ("//", "/./", "/../", a bad escape, a NUL) is refused: dockerd's router would answer it with a redirect
    /// anyway, and judging one spelling while dockerd acts on another is how filters are bypassed.
    /// </summary>
    public static string DecodePath(string rawPath)
    {
        var bytes = new List<byte>(rawPath.Length);
        for (int i = 0; i < rawPath.Length; i++)
        {
            char c = rawPath[i];
            if (c == '%')
            {
                if (i + 2 >= rawPath.Length || !char.IsAsciiHexDigit(rawPath[i + 1]) || !char.IsAsciiHexDigit(rawPath[i + 2]))
                    throw new PolicyException($"request path \"{rawPath}\" has a malformed percent escape");
                bytes.Add(Convert.ToByte(rawPath.Substring(i + 1, 2), 16));
                i += 2;
            }
            else bytes.Add((byte)c);
        }
        string path;
        try { path = new UTF8Encoding(false, true).GetString(bytes.ToArray()); }
        catch (DecoderFallbackException) { throw new PolicyException($"request path \"{rawPath}\" is not UTF-8"); }
        if (!path.StartsWith('/') || path.Contains("//") || path.Contains('\0') || path.Split('/').Any(s => s is "." or ".."))
            throw new PolicyException($"request path \"{rawPath}\" is not a clean path");
        return path;
    }

    /// <summary>Every value of a query parameter (form-decoded: '+' is a space), in order.</summary>
    public static IEnumerable<string> QueryValues(string query, string key)
    {
        foreach (var pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=');
            string k = FormDecode(eq < 0 ? pair : pair[..eq]);
            if (k == key) yield return FormDecode(eq < 0 ? "" : pair[(eq + 1)..]);
        }
    }

    static string FormDecode(string s)
    {
        try { return Uri.UnescapeDataString(s.Replace('+', ' ')); }
        catch (UriFormatException) { return s; }
    }

    /// <summary>POST /build: the builder's containers must not run in the host's network namespace.</summary>
    public static void CheckBuild(string query)
    {
        if (QueryValues(query, "networkmode").Any(v => v.Trim().Equals("host", StringComparison.OrdinalIgnoreCase)))
            throw new PolicyException("sandbox-runc containers can't share a network namespace with the host (because they use the linux user-namespace for isolation): docker build --network=host is refused");
    }

    /// <summary>POST /containers/{id}/start with a body: below API 1.24 that body replaces the container's host configuration.</summary>
    public static void CheckStartBody(long bodyLength, bool chunked)
    {
        if (chunked || bodyLength > 7)
            throw new PolicyException("docker start with a host configuration in its body is refused through a mounted socket (create the container with it instead)");
    }

    /// <summary>POST /containers/{id}/update: limits and the restart policy; devices cannot be changed this way.</summary>
    public static void CheckUpdate(JsonObject body)
    {
        foreach (var field in new[] { "Devices", "DeviceCgroupRules", "DeviceRequests" })
            if (body[field] is JsonArray { Count: > 0 })
                throw new PolicyException($"docker update of {field} is refused through a mounted socket: devices are fixed when a container is created");
    }

    /// <summary>
    /// A JSON request body as dockerd will read it. dockerd (Go's encoding/json) matches field names without regard
    /// to case and lets the last of two equal names win, so {"hostconfig": ...} is its HostConfig: the fields this
    /// policy reads are renamed to their canonical spelling, and an object with two names equal but for case is
    /// refused, as is an object with a name twice. The proxy forwards the object it judged, re-serialized, never the
    /// bytes it was sent.
    /// </summary>
    public static JsonObject ParseObject(byte[] body, string what)
    {
        JsonObject? root;
        try
        {
            // A name twice in one object (anywhere: Go would take the last one) is refused, not judged by the first.
            root = JsonNode.Parse(body.Length == 0 ? "{}"u8 : body,
                documentOptions: new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false }) as JsonObject;
        }
        catch (JsonException e) { throw new PolicyException($"{what}: the body is not valid JSON ({e.Message.Split(" Path:")[0].Split(" LineNumber:")[0]})"); }
        if (root is null) throw new PolicyException($"{what}: the body is not a JSON object");
        Canonicalize(root, what);
        return root;
    }

    static readonly string[] TopFields = ["HostConfig", "Image", "Labels", "Devices", "DeviceCgroupRules", "DeviceRequests"];
    static readonly string[] HostFields = ["PidMode", "IpcMode", "UTSMode", "NetworkMode", "Binds", "Mounts", "Runtime"];
    static readonly string[] MountFields = ["Type", "Source", "Target", "BindOptions"];
    static readonly string[] BindOptionFields = ["NonRecursive"];

    /// <summary>Only where this policy reads (the body, its HostConfig, each mount and its bind options): labels and the rest are data.</summary>
    static void Canonicalize(JsonObject root, string what)
    {
        Canonicalize(root, TopFields, what);
        if (root["HostConfig"] is not JsonObject host) return;
        Canonicalize(host, HostFields, what);
        if (host["Mounts"] is not JsonArray mounts) return;
        foreach (var m in mounts.OfType<JsonObject>())
        {
            Canonicalize(m, MountFields, what);
            if (m["BindOptions"] is JsonObject o) Canonicalize(o, BindOptionFields, what);
        }
    }

    static void Canonicalize(JsonObject o, string[] fields, string what)
    {
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var key in o.Select(p => p.Key).ToList())
        {
            if (!seen.Add(key)) throw new PolicyException($"{what}: the body has the field \"{key}\" twice (names differing only in case)");
            var canonical = fields.FirstOrDefault(k => k.Equals(key, StringComparison.OrdinalIgnoreCase));
            if (canonical is not null && canonical != key)
            {
                var value = o[key];
                o.Remove(key);
                o[canonical] = value;
            }
        }
    }

    static string? Str(JsonNode? n) => n is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    /// <summary>
    /// The OCI spec a create request amounts to, as far as the isolation policy looks: the namespaces it would share
    /// with the host (--pid/--ipc/--uts/--network=host leave that namespace out; container:x joins are judged by the
    /// runtime at start, which knows x's namespaces), its bind mounts from HostConfig.Binds and HostConfig.Mounts of
    /// type bind (named volumes, tmpfs and the rest are not host paths: the runtime judges volumes by what they are
    /// at start), and no user namespace (every container gets its own).
    /// </summary>
    public static Spec CreateSpec(JsonObject body)
    {
        var host = body["HostConfig"] as JsonObject ?? [];
        var namespaces = new List<Namespace> { new() { Type = "mount" } };
        if (Str(host["PidMode"]) != "host") namespaces.Add(new Namespace { Type = "pid" });
        if (Str(host["IpcMode"]) != "host") namespaces.Add(new Namespace { Type = "ipc" });
        if (Str(host["UTSMode"]) != "host") namespaces.Add(new Namespace { Type = "uts" });
        if (Str(host["NetworkMode"]) != "host") namespaces.Add(new Namespace { Type = "network" });

        var mounts = new List<Mount>();
        if (host["Binds"] is JsonArray binds)
            foreach (var bind in binds)
            {
                // "source:destination[:options]"; a source that is not absolute names a volume.
                if (Str(bind) is not { } spec || !spec.StartsWith('/')) continue;
                var parts = spec.Split(':');
                mounts.Add(new Mount
                {
                    Type = "bind",
                    Source = parts[0],
                    Destination = parts.Length > 1 ? parts[1] : parts[0],
                    // Docker's -v binds are recursive unless told otherwise.
                    Options = [parts.Length > 2 && parts[2].Split(',').Contains("bind") ? "bind" : "rbind"],
                });
            }
        if (host["Mounts"] is JsonArray list)
            foreach (var m in list.OfType<JsonObject>())
            {
                if (Str(m["Type"]) != "bind" || Str(m["Source"]) is not { } source) continue;
                bool nonRecursive = m["BindOptions"] is JsonObject o && o["NonRecursive"] is JsonValue nr && nr.GetValueKind() == JsonValueKind.True;
                mounts.Add(new Mount { Type = "bind", Source = source, Destination = Str(m["Target"]) ?? source, Options = [nonRecursive ? "bind" : "rbind"] });
            }
        return new Spec { Mounts = mounts, Linux = new Linux { Namespaces = namespaces } };
    }

    /// <summary>The image a create request names (Config.Image, or Image at the top for old clients).</summary>
    public static string? CreateImage(JsonObject body) => Str(body["Image"]) ?? Str((body["Config"] as JsonObject)?["Image"]);

    /// <summary>The create request's labels this runtime reads (io.sandbox-runc.*), as dockerd would record them.</summary>
    public static Dictionary<string, string> CreateLabels(JsonObject body)
    {
        var labels = new Dictionary<string, string>();
        var node = body["Labels"] ?? (body["Config"] as JsonObject)?["Labels"];
        if (node is JsonObject o)
            foreach (var (key, value) in o)
                if (key.StartsWith(ContainerSettings.Prefix, StringComparison.Ordinal) && Str(value) is { } v) labels[key] = v;
        return labels;
    }

    /// <summary>
    /// A container created from inside an isolated container is isolated too: a create whose labels ask
    /// io.sandbox-runc.isolation=off is refused (whatever the admin settings allow on the host: the socket must not
    /// be a way out of the isolation its user is in).
    /// </summary>
    public static void CheckCreate(JsonObject body)
    {
        if (CreateLabels(body).TryGetValue(ContainerSettings.IsolationKey, out var isolation) && isolation != "on")
            throw new PolicyException($"{ContainerSettings.IsolationKey}={isolation} refused for a container created through a mounted docker socket: " +
                                      "containers created from inside an isolated container are isolated too");
    }

    /// <summary>
    /// The request as forwarded: HostConfig.Runtime set to this runtime, whatever it asked for (runc, another one,
    /// none), and the label io.sandbox-runc.isolation=on, which wins over an image's label of that name (dockerd
    /// merges the request's labels over the image's), so an image cannot opt its container out either.
    /// </summary>
    public static byte[] Isolated(JsonObject body, string runtime)
    {
        if (body["HostConfig"] is not JsonObject host) body["HostConfig"] = host = [];
        host["Runtime"] = runtime;
        if (body["Labels"] is not JsonObject labels) body["Labels"] = labels = [];
        labels[ContainerSettings.IsolationKey] = "on";
        return Serialize(body);
    }

    /// <summary>The judged object, as forwarded to the engine.</summary>
    public static byte[] Serialize(JsonObject body) => Encoding.UTF8.GetBytes(body.ToJsonString());
}
