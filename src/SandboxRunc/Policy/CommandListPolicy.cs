namespace SandboxRunc.Policy;

/// <summary>
/// The docker CLI's command names, as `docker --help` lists them, over the canonical names of
/// <see cref="DockerApiRoutes"/> ("group verb"; top-level only commands are one word: login, search, version, inspect).
/// </summary>
public static class DockerCommands
{
    /// <summary>Top-level commands that are another name of a group's command (`docker ps` = `docker container ls`).</summary>
    public static readonly IReadOnlyDictionary<string, string[]> Aliases = new Dictionary<string, string[]>
    {
        ["attach"] = ["container attach"], ["commit"] = ["container commit"], ["cp"] = ["container cp"],
        ["create"] = ["container create"], ["diff"] = ["container diff"], ["exec"] = ["container exec"],
        ["export"] = ["container export"], ["kill"] = ["container kill"], ["logs"] = ["container logs"],
        ["pause"] = ["container pause"], ["port"] = ["container port"], ["ps"] = ["container ls"],
        ["rename"] = ["container rename"], ["restart"] = ["container restart"], ["rm"] = ["container rm"],
        ["run"] = ["container run"], ["start"] = ["container start"], ["stats"] = ["container stats"],
        ["stop"] = ["container stop"], ["top"] = ["container top"], ["unpause"] = ["container unpause"],
        ["update"] = ["container update"], ["wait"] = ["container wait"],
        ["build"] = ["image build", "builder build"], ["history"] = ["image history"], ["images"] = ["image ls"],
        ["import"] = ["image import"], ["load"] = ["image load"], ["pull"] = ["image pull"], ["push"] = ["image push"],
        ["rmi"] = ["image rm"], ["save"] = ["image save"], ["tag"] = ["image tag"],
        ["events"] = ["system events"], ["info"] = ["system info"],
        ["inspect"] = ["inspect"], ["login"] = ["login"], ["search"] = ["search"], ["version"] = ["version"],
    };

    /// <summary>
    /// Names `docker --help` lists that make no request of their own to the engine (or that Docker's ECI does not
    /// filter either): accepted in a list, they match nothing. compose's requests are those of the container,
    /// network and volume commands, and are filtered as such.
    /// </summary>
    public static readonly IReadOnlySet<string> WithoutRequests = new HashSet<string>
    {
        "compose", "context", "dev", "extension", "feedback", "init", "logout", "manifest", "plugins", "sbom", "scan", "scout", "stack", "trust",
    };

    /// <summary>Every canonical command name the route table uses.</summary>
    public static readonly IReadOnlySet<string> Canonical =
        DockerApiRoutes.All.SelectMany(r => r.Owners.Concat(r.NeededBy)).ToHashSet();

    /// <summary>The management command groups (container, image, volume, network, builder, system, plugin, ...).</summary>
    public static readonly IReadOnlySet<string> Groups =
        Canonical.Where(c => c.Contains(' ')).Select(c => c[..c.IndexOf(' ')]).ToHashSet();

    static string GroupOf(string canonical) => canonical.Contains(' ') ? canonical[..canonical.IndexOf(' ')] : canonical;

    /// <summary>
    /// Whether a command list entry names this canonical command: its group's name ("volume"), a top-level name
    /// that is it ("ps" = container ls), or a wildcard "P*" matching the group or a top-level name of it by prefix
    /// ("container*" = every docker container command, "build*" = build and every docker builder command, "*" = all).
    /// </summary>
    public static bool Names(string entry, string canonical)
    {
        string group = GroupOf(canonical);
        if (entry.EndsWith('*'))
        {
            string prefix = entry[..^1];
            return group.StartsWith(prefix, StringComparison.Ordinal)
                || Aliases.Any(a => a.Key.StartsWith(prefix, StringComparison.Ordinal) && a.Value.Contains(canonical));
        }
        return entry == group || Aliases.TryGetValue(entry, out var names) && names.Contains(canonical);
    }

    /// <summary>Null when the entry names at least one command (or is a known name without requests), else why not.</summary>
    public static string? Unknown(string entry)
    {
        if (WithoutRequests.Contains(entry)) return null;
        if (Canonical.Any(c => Names(entry, c))) return null;
        return $"\"{entry}\" is not a docker command name (commands: {string.Join(", ", Aliases.Keys.Order())}; groups, alone or as " +
               $"\"group*\": {string.Join(", ", Groups.Order())})";
    }
}

/// <summary>
/// enhancedContainerIsolation.dockerSocketMount.commandList, applied to each API request made through a mounted
/// socket (see <see cref="DockerApiRoutes"/> for what owns and needs which request):
/// <list type="bullet">
/// <item>deny: a request is blocked when an entry names one of the commands that own it; requests no route knows
///   go through (dockerd answers them, or 404s).</item>
/// <item>allow: a request passes only when an entry names a command that owns or needs it; unknown requests are
///   blocked.</item>
/// <item>/_ping passes always: every CLI command starts with it.</item>
/// </list>
/// No list: everything passes (the container-creating requests are still judged by the isolation policy).
/// </summary>
public static class CommandListPolicy
{
    public static bool Allows(CommandList? list, DockerRoute? route)
    {
        if (route?.Kind == RouteKind.Ping || list is null) return true;
        if (list.Type == "deny")
            return route is null || !route.Owners.Any(c => list.Commands.Any(e => DockerCommands.Names(e, c)));
        return route is not null && route.Owners.Concat(route.NeededBy).Any(c => list.Commands.Any(e => DockerCommands.Names(e, c)));
    }

    /// <summary>What a blocked request is told (ECI's words, the request target as it was sent).</summary>
    public static string BlockedMessage(string target, string settingsPath) =>
        $"docker command \"{target}\" is blocked; if you wish to allow it, configure the docker socket command list " +
        $"(enhancedContainerIsolation.dockerSocketMount.commandList in {settingsPath})";
}
