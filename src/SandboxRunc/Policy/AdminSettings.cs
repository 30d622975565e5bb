using System.Text.Json;
using System.Text.Json.Nodes;

namespace SandboxRunc.Policy;

/// <summary>commandList of the docker socket mount: which docker API commands a container that mounts the socket may use
/// (enforced by the socket proxy: <see cref="CommandListPolicy"/>).</summary>
public sealed record CommandList(string Type, IReadOnlyList<string> Commands);

/// <summary>
/// The administrator's settings, /etc/sandbox-runc/admin-settings.json (env SANDBOX_RUNC_ADMIN_SETTINGS
/// points elsewhere). Docker's ECI schema, configurationFileVersion 2:
/// <code>
/// { "configurationFileVersion": 2,
///   "enhancedContainerIsolation": {
///     "value": true, "locked": false,
///     "dockerSocketMount": {
///       "imageList": { "images": ["docker:cli", "docker.io/localstack/localstack:*"], "allowDerivedImages": true },
///       "commandList": { "type": "deny", "commands": ["push", "build"] } },
///     "restrictedMounts": ["/srv/secrets"],              (ours: more restricted host paths)
///     "fileSharingAllowList": ["/home", "/tmp", "/data"] (ours: replaces the default allow list),
///     "systemContainers": "auto" (ours: "auto", "label" or "off"; see SystemContainers) } }
/// </code>
/// A missing file means the defaults (isolation on, not locked, no image may mount the socket). A file
/// that is not root's, or is group/world-writable, or is malformed in any field, fails every create:
/// a broken policy must never mean no policy.
/// </summary>
public sealed record AdminSettings(
    string Source,
    bool Value,
    bool Locked,
    IReadOnlyList<string> SocketImages,
    bool AllowDerivedImages,
    CommandList? CommandList,
    IReadOnlyList<string> RestrictedMounts,
    IReadOnlyList<string> FileSharingAllowList,
    string SystemContainers = AdminSettings.SystemContainersAuto)
{
    /// <summary>
    /// Which containers get the system-container treatment (Policy/SystemContainerPolicy: every capability of their user
    /// namespace, no engine seccomp or AppArmor profile, engine storage): "auto" (the default) by the label or
    /// annotation io.sandbox-runc.system-container, else by the command (an init or an engine daemon); "label" only
    /// when the label or annotation says so (an image's LABEL counts: docker merges it into the container's); "off"
    /// never (DinD then needs --privileged, which gives the same capabilities).
    /// </summary>
    public const string SystemContainersAuto = "auto", SystemContainersLabel = "label", SystemContainersOff = "off";

    public const string DefaultPath = "/etc/sandbox-runc/admin-settings.json";

    /// <summary>Paths users may always bind-mount (and whatever is under them), unless they are the engine's own state.</summary>
    /// <summary>
    /// Inside these, binds are ID-mapped (container root acts as host root on those files, as under runc), so
    /// they are user data places: not /opt, /usr or /etc, whose root-owned programs and settings host root runs.
    /// </summary>
    public static readonly IReadOnlyList<string> DefaultFileSharing = ["/home", "/tmp", "/mnt", "/media", "/srv", "/var/tmp"];

    public static AdminSettings Defaults(string source = "defaults") =>
        new(source, Value: true, Locked: false, [], AllowDerivedImages: false, null, [], DefaultFileSharing);

    public static string PathFromEnvironment() =>
        Environment.GetEnvironmentVariable("SANDBOX_RUNC_ADMIN_SETTINGS") is { Length: > 0 } p ? p : DefaultPath;

    /// <summary>Reads the file (impure): missing = defaults; owner and mode checked, then <see cref="Parse"/>.</summary>
    public static AdminSettings Load(string path)
    {
        if (!File.Exists(path)) return Defaults($"{path} (missing: defaults)");
        var owner = Interop.HostPath.OwnerAndMode(path)
            ?? throw new PolicyException($"admin settings {path}: cannot stat the file");
        CheckOwnership(path, owner.Uid, owner.Mode);
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>The file must be root's and writable by nobody else, or a user could turn isolation off.</summary>
    public static void CheckOwnership(string path, uint uid, uint mode)
    {
        if (uid != 0 || (mode & 0x12 /* 0022 */) != 0)
            throw new PolicyException(
                $"admin settings {path} must be owned by root and not writable by group or others " +
                $"(owner uid {uid}, mode {Convert.ToString(mode & 0xfff, 8).PadLeft(4, '0')}): refusing to start containers");
    }

    /// <summary>Parses and validates the settings text (pure). Every error names the wrong field.</summary>
    public static AdminSettings Parse(string text, string path)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            string why = e.Message.Split(" Path:")[0].Split(" LineNumber:")[0].Replace(" Change the reader options.", "").TrimEnd('.');
            throw Bad(path, $"invalid JSON at line {(e.LineNumber ?? 0) + 1}, column {(e.BytePositionInLine ?? 0) + 1}: {why}");
        }
        if (root is not JsonObject top) throw Bad(path, "the document must be a JSON object");

        // Other keys of Docker's admin-settings.json (other products' settings) are not ours to judge.
        var version = top["configurationFileVersion"];
        if (version is null) throw Bad(path, "configurationFileVersion is missing (must be 2)");
        if (version.GetValueKind() != JsonValueKind.Number || !version.AsValue().TryGetValue(out int v) || v != 2)
            throw Bad(path, $"configurationFileVersion must be 2 (found {version.ToJsonString()})");

        var settings = Defaults(path);
        var eci = Obj(top, "enhancedContainerIsolation", "enhancedContainerIsolation", path);
        if (eci is null) return settings;
        Known(eci, "enhancedContainerIsolation", path, "value", "locked", "dockerSocketMount", "restrictedMounts", "fileSharingAllowList", "systemContainers");
        string systemContainers = SystemContainersAuto;
        if (eci.ContainsKey("systemContainers"))
        {
            var n = eci["systemContainers"];
            systemContainers = n is not null && n.GetValueKind() == JsonValueKind.String && n.GetValue<string>() is
                SystemContainersAuto or SystemContainersLabel or SystemContainersOff
                ? n.GetValue<string>()
                : throw Bad(path, $"enhancedContainerIsolation.systemContainers must be \"auto\", \"label\" or \"off\"{Found(n)}");
        }
        settings = settings with
        {
            Value = Bool(eci, "value", "enhancedContainerIsolation", path) ?? true,
            Locked = Bool(eci, "locked", "enhancedContainerIsolation", path) ?? false,
            RestrictedMounts = Paths(eci, "restrictedMounts", path) ?? [],
            FileSharingAllowList = Paths(eci, "fileSharingAllowList", path) ?? DefaultFileSharing,
            SystemContainers = systemContainers,
        };
        const string dsm = "enhancedContainerIsolation.dockerSocketMount";
        var socket = Obj(eci, "dockerSocketMount", dsm, path);
        if (socket is null) return settings;
        Known(socket, dsm, path, "imageList", "commandList");
        if (Obj(socket, "imageList", dsm + ".imageList", path) is { } imageList)
        {
            Known(imageList, dsm + ".imageList", path, "images", "allowDerivedImages");
            var images = Strings(imageList, "images", dsm + ".imageList", path) ?? [];
            for (int i = 0; i < images.Count; i++)
                if (ImageReference.ParsePattern(images[i]) is null)
                    throw Bad(path, $"{dsm}.imageList.images[{i}] \"{images[i]}\" is not an image name (name[:tag|:*], name@sha256:<64 hex digits>, or \"*\")");
            settings = settings with
            {
                SocketImages = images,
                AllowDerivedImages = Bool(imageList, "allowDerivedImages", dsm + ".imageList", path) ?? false,
            };
        }
        if (Obj(socket, "commandList", dsm + ".commandList", path) is { } commandList)
        {
            // Enforced by the socket proxy on every API request a container makes through a mounted socket
            // (CommandListPolicy). An unknown name fails here: a typo in a deny list must not silently deny nothing.
            Known(commandList, dsm + ".commandList", path, "type", "commands");
            string type = commandList["type"] is { } t && t.GetValueKind() == JsonValueKind.String ? t.GetValue<string>()
                : throw Bad(path, $"{dsm}.commandList.type must be \"allow\" or \"deny\"{Found(commandList["type"])}");
            if (type is not ("allow" or "deny"))
                throw Bad(path, $"{dsm}.commandList.type must be \"allow\" or \"deny\" (found \"{type}\")");
            var commands = Strings(commandList, "commands", dsm + ".commandList", path) ?? [];
            for (int i = 0; i < commands.Count; i++)
                if (commands[i].Length == 0 || !commands[i].All(c => char.IsAsciiLetterLower(c) || c == '-' || c == '*'))
                    throw Bad(path, $"{dsm}.commandList.commands[{i}] \"{commands[i]}\" is not a docker command name (e.g. \"push\", \"container*\")");
                else if (DockerCommands.Unknown(commands[i]) is { } why)
                    throw Bad(path, $"{dsm}.commandList.commands[{i}] {why}");
            settings = settings with { CommandList = new CommandList(type, commands) };
        }
        return settings;
    }

    static PolicyException Bad(string path, string what) =>
        new($"admin settings {path}: {what}; refusing to start containers until it is fixed");

    static string Found(JsonNode? n) => n is null ? " (missing)" : $" (found {n.ToJsonString()})";

    static void Known(JsonObject o, string where, string path, params string[] names)
    {
        foreach (var (key, _) in o)
            if (!names.Contains(key))
                throw Bad(path, $"{where}.{key} is not a known setting (known: {string.Join(", ", names)})");
    }

    static JsonObject? Obj(JsonObject parent, string key, string field, string path) => parent[key] switch
    {
        null when !parent.ContainsKey(key) => null,
        JsonObject o => o,
        var n => throw Bad(path, $"{field} must be an object{Found(n)}"),
    };

    static bool? Bool(JsonObject o, string key, string where, string path)
    {
        if (!o.ContainsKey(key)) return null;
        var n = o[key];
        return n?.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(path, $"{where}.{key} must be true or false{Found(n)}"),
        };
    }

    static List<string>? Strings(JsonObject o, string key, string where, string path)
    {
        if (!o.ContainsKey(key)) return null;
        if (o[key] is not JsonArray a) throw Bad(path, $"{where}.{key} must be an array of strings{Found(o[key])}");
        var list = new List<string>();
        for (int i = 0; i < a.Count; i++)
        {
            if (a[i] is not JsonValue s || s.GetValueKind() != JsonValueKind.String)
                throw Bad(path, $"{where}.{key}[{i}] must be a string{Found(a[i])}");
            list.Add(s.GetValue<string>());
        }
        return list;
    }

    static List<string>? Paths(JsonObject o, string key, string path)
    {
        var list = Strings(o, key, "enhancedContainerIsolation", path);
        if (list is null) return null;
        for (int i = 0; i < list.Count; i++)
            if (!list[i].StartsWith('/'))
                throw Bad(path, $"enhancedContainerIsolation.{key}[{i}] \"{list[i]}\" must be an absolute path");
        return list;
    }
}
