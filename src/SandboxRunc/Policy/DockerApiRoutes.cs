namespace SandboxRunc.Policy;

/// <summary>What the socket proxy must do with a request beyond the command list (see SocketProxy/).</summary>
public enum RouteKind
{
    /// <summary>Forwarded as it is once the command list allows it.</summary>
    Plain,
    /// <summary>GET/HEAD /_ping: every CLI command starts with it (API version negotiation); never a command of its own.</summary>
    Ping,
    /// <summary>POST /containers/create: judged by the isolation policy, runtime forced to this one.</summary>
    ContainerCreate,
    /// <summary>POST /containers/{id}/update: limits only; device changes refused.</summary>
    ContainerUpdate,
    /// <summary>POST /containers/{id}/start: a body (API &lt; 1.24: a new host configuration) is refused.</summary>
    ContainerStart,
    /// <summary>POST /containers/{id}/exec: only into containers that run under this runtime.</summary>
    ExecCreate,
    /// <summary>POST /exec/{id}/start: hijacked; only for an exec of a container that runs under this runtime.</summary>
    ExecStart,
    /// <summary>POST /containers/{id}/attach (and its websocket): hijacked; only to containers under this runtime.</summary>
    Attach,
    /// <summary>PUT /containers/{id}/archive (docker cp into a container): only into containers under this runtime.</summary>
    ArchivePut,
    /// <summary>POST /build: the builder's containers must not get the host's network.</summary>
    Build,
    /// <summary>Always refused (<see cref="DockerRoute.Refusal"/>): it runs code outside this runtime's isolation.</summary>
    Refused,
}

/// <summary>
/// One route of the Docker Engine API: method, path pattern (after the optional /vX.YY prefix), the CLI commands
/// whose purpose it is (<see cref="Owners"/>), the commands that also need it to work (<see cref="NeededBy"/>),
/// and what the proxy does with it. Command names are canonical, "group verb" as `docker GROUP VERB` names them
/// (top-level names such as ps, run, push are aliases: <see cref="DockerCommands"/>).
/// Pattern segments: a literal, {x} (one segment) or {x*} (one or more segments: image names hold slashes).
/// </summary>
public sealed record DockerRoute(string Method, string Pattern, string[] Owners, string[] NeededBy, RouteKind Kind = RouteKind.Plain,
    bool Hijack = false, string? Refusal = null)
{
    internal string[] Segments { get; } = DockerApiRoutes.SegmentsOf(Pattern);

    public override string ToString() => $"{Method} {Pattern}";
}

/// <summary>
/// The route table of the Docker Engine API (as dockerd 20.10+ registers it; the order is dockerd's where a path
/// could match two patterns), mapping every request the docker CLI makes to the commands it belongs to. It is
/// data: the command list (<see cref="CommandListPolicy"/>) and the proxy read it; the README documents it; the
/// unit tests check it route by route against requests captured from the real CLI.
///
/// A command list entry X in a deny list blocks the requests X owns (so X cannot do what it is for: deny
/// "push" blocks POST /images/{name}/push); in an allow list it allows the requests X owns and those X needs
/// (allow "logs" allows GET /containers/{id}/logs and the container inspect `docker logs` makes first).
/// </summary>
public static class DockerApiRoutes
{
    static DockerRoute R(string method, string pattern, string[] owners, string[]? neededBy = null, RouteKind kind = RouteKind.Plain,
        bool hijack = false, string? refusal = null) =>
        new(method, pattern, owners, neededBy ?? [], refusal is null ? kind : RouteKind.Refused, hijack, refusal);

    const string PluginRefusal = "plugins run as host root with the privileges they ask for, outside sandbox-runc";
    const string ServiceRefusal = "swarm creates a service's containers itself, with dockerd's default runtime, outside the socket's checks";

    // Commands that need a container inspect (GET /containers/{id}/json) before their own request.
    static readonly string[] InspectUsers =
        ["container logs", "container exec", "container port", "container start", "container attach", "container run", "container cp"];

    /// <summary>Every route, in match order.</summary>
    public static readonly IReadOnlyList<DockerRoute> All =
    [
        // system
        R("GET", "/_ping", [], kind: RouteKind.Ping),
        R("HEAD", "/_ping", [], kind: RouteKind.Ping),
        R("GET", "/version", ["version"]),
        R("GET", "/info", ["system info"], ["image pull", "image push", "container run", "container create", "image build", "builder build"]),
        R("GET", "/events", ["system events"]),
        R("GET", "/system/df", ["system df"]),
        R("POST", "/auth", ["login"], ["image pull", "image push"]),

        // containers (dockerd's container router, in its order)
        R("HEAD", "/containers/{id}/archive", ["container cp"]),
        R("GET", "/containers/json", ["container ls"]),
        R("GET", "/containers/{id}/export", ["container export"]),
        R("GET", "/containers/{id}/changes", ["container diff"]),
        R("GET", "/containers/{id}/json", ["container inspect", "inspect"], InspectUsers),
        R("GET", "/containers/{id}/top", ["container top"]),
        R("GET", "/containers/{id}/logs", ["container logs"]),
        R("GET", "/containers/{id}/stats", ["container stats"]),
        R("GET", "/containers/{id}/attach/ws", ["container attach"], kind: RouteKind.Attach, hijack: true),
        R("GET", "/exec/{id}/json", ["container exec"]),
        R("GET", "/containers/{id}/archive", ["container cp"]),
        R("POST", "/containers/create", ["container create", "container run"], kind: RouteKind.ContainerCreate),
        R("POST", "/containers/{id}/kill", ["container kill"], ["container run", "container attach", "container start"]),
        R("POST", "/containers/{id}/pause", ["container pause"]),
        R("POST", "/containers/{id}/unpause", ["container unpause"]),
        R("POST", "/containers/{id}/restart", ["container restart"]),
        R("POST", "/containers/{id}/start", ["container start", "container run"], kind: RouteKind.ContainerStart),
        R("POST", "/containers/{id}/stop", ["container stop"]),
        R("POST", "/containers/{id}/wait", ["container wait"], ["container run", "container start"]),
        R("POST", "/containers/{id}/resize", ["container attach"], ["container run", "container start"]),
        R("POST", "/containers/{id}/attach", ["container attach"], ["container run", "container start"], RouteKind.Attach, hijack: true),
        R("POST", "/containers/{id}/copy", ["container cp"]),
        R("POST", "/containers/{id}/exec", ["container exec"], kind: RouteKind.ExecCreate),
        R("POST", "/exec/{id}/start", ["container exec"], kind: RouteKind.ExecStart, hijack: true),
        R("POST", "/exec/{id}/resize", ["container exec"]),
        R("POST", "/containers/{id}/rename", ["container rename"]),
        R("POST", "/containers/{id}/update", ["container update"], kind: RouteKind.ContainerUpdate),
        R("POST", "/containers/prune", ["container prune", "system prune"]),
        R("POST", "/commit", ["container commit"]),
        R("PUT", "/containers/{id}/archive", ["container cp"], kind: RouteKind.ArchivePut),
        R("DELETE", "/containers/{id}", ["container rm"]),

        // images
        R("GET", "/images/json", ["image ls"]),
        R("GET", "/images/search", ["search"]),
        R("GET", "/images/get", ["image save"]),
        R("GET", "/images/{name*}/get", ["image save"]),
        R("GET", "/images/{name*}/history", ["image history"]),
        R("GET", "/images/{name*}/json", ["image inspect", "inspect"], ["container run", "container create"]),
        R("POST", "/images/load", ["image load"]),
        R("POST", "/images/create", ["image pull", "image import"], ["container run", "container create"]),
        R("POST", "/images/{name*}/push", ["image push"]),
        R("POST", "/images/{name*}/tag", ["image tag"], ["image build", "builder build"]),
        R("POST", "/images/prune", ["image prune", "system prune"]),
        R("DELETE", "/images/{name*}", ["image rm"]),
        R("GET", "/distribution/{name*}/json", ["image pull"], ["container run", "container create"]),

        // build (classic builder and BuildKit: /session and /grpc are hijacked HTTP/2 streams)
        R("POST", "/build", ["image build", "builder build"], kind: RouteKind.Build),
        R("POST", "/build/prune", ["builder prune", "system prune"]),
        R("POST", "/build/cancel", ["image build", "builder build"]),
        R("POST", "/session", ["image build", "builder build"], hijack: true),
        R("POST", "/grpc", ["image build", "builder build"], hijack: true),

        // volumes
        R("GET", "/volumes", ["volume ls"]),
        R("GET", "/volumes/{name}", ["volume inspect", "inspect"]),
        R("POST", "/volumes/create", ["volume create"]),
        R("POST", "/volumes/prune", ["volume prune", "system prune"]),
        R("PUT", "/volumes/{name}", ["volume update"]),
        R("DELETE", "/volumes/{name}", ["volume rm"]),

        // networks
        R("GET", "/networks", ["network ls"]),
        R("GET", "/networks/", ["network ls"]),
        R("GET", "/networks/{id}", ["network inspect", "inspect"], ["network rm"]),
        R("POST", "/networks/create", ["network create"]),
        R("POST", "/networks/{id}/connect", ["network connect"]),
        R("POST", "/networks/{id}/disconnect", ["network disconnect"]),
        R("POST", "/networks/prune", ["network prune", "system prune"]),
        R("DELETE", "/networks/{id}", ["network rm"]),

        // plugins: listing is harmless; installing, enabling or configuring one runs it as host root
        R("GET", "/plugins", ["plugin ls"]),
        R("GET", "/plugins/{name*}/json", ["plugin inspect"]),
        R("GET", "/plugins/privileges", ["plugin install"], refusal: PluginRefusal),
        R("DELETE", "/plugins/{name*}", ["plugin rm"]),
        R("POST", "/plugins/{name*}/enable", ["plugin enable"], refusal: PluginRefusal),
        R("POST", "/plugins/{name*}/disable", ["plugin disable"]),
        R("POST", "/plugins/pull", ["plugin install"], refusal: PluginRefusal),
        R("POST", "/plugins/{name*}/push", ["plugin push"]),
        R("POST", "/plugins/{name*}/upgrade", ["plugin upgrade"], refusal: PluginRefusal),
        R("POST", "/plugins/{name*}/set", ["plugin set"], refusal: PluginRefusal),
        R("POST", "/plugins/create", ["plugin create"], refusal: PluginRefusal),

        // swarm: services' containers are made by dockerd itself, not through this socket
        R("GET", "/swarm", ["swarm ca"]),
        R("GET", "/swarm/unlockkey", ["swarm unlock-key"]),
        R("POST", "/swarm/init", ["swarm init"]),
        R("POST", "/swarm/join", ["swarm join"]),
        R("POST", "/swarm/leave", ["swarm leave"]),
        R("POST", "/swarm/update", ["swarm update"]),
        R("POST", "/swarm/unlock", ["swarm unlock"]),
        R("GET", "/services", ["service ls"]),
        R("GET", "/services/{id}", ["service inspect"]),
        R("GET", "/services/{id}/logs", ["service logs"]),
        R("POST", "/services/create", ["service create"], refusal: ServiceRefusal),
        R("POST", "/services/{id}/update", ["service update"], refusal: ServiceRefusal),
        R("DELETE", "/services/{id}", ["service rm"]),
        R("GET", "/tasks", ["service ps", "node ps"]),
        R("GET", "/tasks/{id}", ["service ps"]),
        R("GET", "/tasks/{id}/logs", ["service logs"]),
        R("GET", "/nodes", ["node ls"]),
        R("GET", "/nodes/{id}", ["node inspect"]),
        R("POST", "/nodes/{id}/update", ["node update"]),
        R("DELETE", "/nodes/{id}", ["node rm"]),
        R("GET", "/secrets", ["secret ls"]),
        R("GET", "/secrets/{id}", ["secret inspect"]),
        R("POST", "/secrets/create", ["secret create"]),
        R("POST", "/secrets/{id}/update", ["secret update"]),
        R("DELETE", "/secrets/{id}", ["secret rm"]),
        R("GET", "/configs", ["config ls"]),
        R("GET", "/configs/{id}", ["config inspect"]),
        R("POST", "/configs/create", ["config create"]),
        R("POST", "/configs/{id}/update", ["config update"]),
        R("DELETE", "/configs/{id}", ["config rm"]),
    ];

    /// <summary>
    /// The route a request goes to, from its method and its decoded, clean path (see <see cref="SplitVersion"/>), or
    /// null when no route matches (dockerd answers 404 there).
    /// </summary>
    public static DockerRoute? Match(string method, string path)
    {
        var segments = SegmentsOf(SplitVersion(path).Path);
        foreach (var route in All)
            if (route.Method == method && Matches(route.Segments, segments)) return route;
        return null;
    }

    /// <summary>"/images/x/json" → [images, x, json]; a trailing slash is an empty last segment ("/networks/" → [networks, ""]).</summary>
    internal static string[] SegmentsOf(string path) => (path.StartsWith('/') ? path[1..] : path).Split('/');

    /// <summary>"/v1.41/containers/json" → ("1.41", "/containers/json"); a path without a version prefix → (null, path).
    /// The prefix is dockerd's: "/v" then digits and dots.</summary>
    public static (string? Version, string Path) SplitVersion(string path)
    {
        if (path.Length > 2 && path[0] == '/' && path[1] == 'v')
        {
            int end = path.IndexOf('/', 2);
            string candidate = end < 0 ? path[2..] : path[2..end];
            if (candidate.Length > 0 && candidate.All(c => char.IsAsciiDigit(c) || c == '.'))
                return (candidate, end < 0 ? "/" : path[end..]);
        }
        return (null, path);
    }

    static bool Matches(string[] pattern, string[] path)
    {
        // A pattern has at most one {x*}: literal segments before it, one or more path segments for it, literals
        // after. It stands for dockerd's {x:.*}, which also takes a trailing slash when it ends the pattern
        // ("DELETE /images/x/" removes the image "x/"), so a last {x*} may end in an empty segment; an empty one
        // elsewhere cannot reach here (DecodePath refuses "//").
        int star = Array.FindIndex(pattern, p => p.EndsWith("*}", StringComparison.Ordinal));
        if (star < 0)
        {
            if (pattern.Length != path.Length) return false;
            for (int i = 0; i < pattern.Length; i++)
                if (!SegmentMatches(pattern[i], path[i])) return false;
            return true;
        }
        int after = pattern.Length - star - 1;
        if (path.Length < pattern.Length) return false;
        for (int i = 0; i < star; i++)
            if (!SegmentMatches(pattern[i], path[i])) return false;
        for (int i = 0; i < after; i++)
            if (!SegmentMatches(pattern[^(i + 1)], path[^(i + 1)])) return false;
        int end = path.Length - after;
        for (int i = star; i < end; i++)
            if (path[i].Length == 0 && !(after == 0 && i == end - 1 && i > star)) return false;
        return true;
    }

    static bool SegmentMatches(string pattern, string segment) =>
        pattern.StartsWith('{') ? segment.Length > 0 : pattern == segment;

    /// <summary>The value of the pattern's {name} (or {name*}) in a path the route matched; null if there is none.</summary>
    public static string? Parameter(DockerRoute route, string path, string name)
    {
        var segments = SegmentsOf(SplitVersion(path).Path);
        var pattern = route.Segments;
        int at = Array.FindIndex(pattern, p => p == "{" + name + "}" || p == "{" + name + "*}");
        if (at < 0) return null;
        if (!pattern[at].EndsWith("*}", StringComparison.Ordinal)) return segments[at];
        int after = pattern.Length - at - 1;
        return string.Join('/', segments[at..(segments.Length - after)]);
    }
}
