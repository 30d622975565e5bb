using SandboxRunc.Policy;
using Xunit;

namespace SandboxRunc.Tests.SocketProxy;

/// <summary>
/// The route table route by route, against the requests the docker CLI makes (Debian's docker.io 20.10, API 1.41):
/// the method and target as sent, with and without the /vX.YY prefix, and the commands that own the route. The
/// list follows the CLI's requests; those of ps, run, logs, exec, cp, inspect, top, stats, diff, pause, update,
/// rename, stop, rm, images, volume ls, network ls, system df, version and info were checked against the ones
/// captured through the proxy from the real client (SocketProxyEngineTests.CliRequests_MatchTheRouteTable asserts
/// that each of those matches a route).
/// </summary>
public class DockerApiRoutesTests
{
    /// <summary>(what the CLI ran, method, target as sent, the route's owners).</summary>
    public static TheoryData<string, string, string, string> CliRequests() => new()
    {
        { "every command", "HEAD", "/_ping", "" },
        { "every command (fallback)", "GET", "/_ping", "" },
        { "docker version", "GET", "/v1.41/version", "version" },
        { "docker info", "GET", "/v1.41/info", "system info" },
        { "docker events", "GET", "/v1.41/events?filters=%7B%7D", "system events" },
        { "docker system df", "GET", "/v1.41/system/df", "system df" },
        { "docker login", "POST", "/v1.41/auth", "login" },
        { "docker ps", "GET", "/v1.41/containers/json", "container ls" },
        { "docker ps -a", "GET", "/v1.41/containers/json?all=1", "container ls" },
        { "docker create", "POST", "/v1.41/containers/create?name=web", "container create,container run" },
        { "docker run", "POST", "/v1.41/containers/create", "container create,container run" },
        { "docker run (attach)", "POST", "/v1.41/containers/0123abcd/attach?stderr=1&stdout=1&stream=1", "container attach" },
        { "docker run --rm (wait)", "POST", "/v1.41/containers/0123abcd/wait?condition=removed", "container wait" },
        { "docker run (start)", "POST", "/v1.41/containers/0123abcd/start", "container start,container run" },
        { "docker run -it (resize)", "POST", "/v1.41/containers/0123abcd/resize?h=24&w=80", "container attach" },
        { "docker logs -f (inspect)", "GET", "/v1.41/containers/web/json", "container inspect,inspect" },
        { "docker logs -f", "GET", "/v1.41/containers/web/logs?follow=1&stderr=1&stdout=1&tail=all", "container logs" },
        { "docker exec", "POST", "/v1.41/containers/web/exec", "container exec" },
        { "docker exec (start)", "POST", "/v1.41/exec/5e1f/start", "container exec" },
        { "docker exec (resize)", "POST", "/v1.41/exec/5e1f/resize?h=24&w=80", "container exec" },
        { "docker exec (exit code)", "GET", "/v1.41/exec/5e1f/json", "container exec" },
        { "docker attach", "POST", "/v1.41/containers/web/attach?logs=1&stderr=1&stdin=1&stdout=1&stream=1", "container attach" },
        { "docker attach (websocket)", "GET", "/v1.41/containers/web/attach/ws?stream=1", "container attach" },
        { "docker top", "GET", "/v1.41/containers/web/top", "container top" },
        { "docker stats", "GET", "/v1.41/containers/web/stats?stream=0", "container stats" },
        { "docker diff", "GET", "/v1.41/containers/web/changes", "container diff" },
        { "docker export", "GET", "/v1.41/containers/web/export", "container export" },
        { "docker cp (stat)", "HEAD", "/v1.41/containers/web/archive?path=%2Fetc", "container cp" },
        { "docker cp from", "GET", "/v1.41/containers/web/archive?path=%2Fetc%2Fhostname", "container cp" },
        { "docker cp to", "PUT", "/v1.41/containers/web/archive?noOverwriteDirNonDir=true&path=%2Ftmp", "container cp" },
        { "docker kill", "POST", "/v1.41/containers/web/kill?signal=KILL", "container kill" },
        { "docker pause", "POST", "/v1.41/containers/web/pause", "container pause" },
        { "docker unpause", "POST", "/v1.41/containers/web/unpause", "container unpause" },
        { "docker restart", "POST", "/v1.41/containers/web/restart", "container restart" },
        { "docker stop", "POST", "/v1.41/containers/web/stop", "container stop" },
        { "docker rename", "POST", "/v1.41/containers/web/rename?name=web2", "container rename" },
        { "docker update", "POST", "/v1.41/containers/web/update", "container update" },
        { "docker rm -f", "DELETE", "/v1.41/containers/web?force=1", "container rm" },
        { "docker container prune", "POST", "/v1.41/containers/prune?filters=%7B%7D", "container prune,system prune" },
        { "docker commit", "POST", "/v1.41/commit?container=web&repo=snap&tag=1", "container commit" },
        { "docker images", "GET", "/v1.41/images/json", "image ls" },
        { "docker search", "GET", "/v1.41/images/search?limit=25&term=debian", "search" },
        { "docker pull", "POST", "/v1.41/images/create?fromImage=debian&tag=12", "image pull,image import" },
        { "docker import", "POST", "/v1.41/images/create?fromSrc=-&repo=imported", "image pull,image import" },
        { "docker push", "POST", "/v1.41/images/myimage/push?tag=latest", "image push" },
        { "docker push (registry path)", "POST", "/v1.41/images/registry.local:5000/team/app/push?tag=1", "image push" },
        { "docker tag", "POST", "/v1.41/images/debian:12/tag?repo=mine&tag=latest", "image tag" },
        { "docker tag (nested name)", "POST", "/v1.41/images/team/app:1/tag?repo=mine&tag=latest", "image tag" },
        { "docker image inspect", "GET", "/v1.41/images/team/app:1/json", "image inspect,inspect" },
        { "docker history", "GET", "/v1.41/images/debian:12/history", "image history" },
        { "docker save", "GET", "/v1.41/images/get?names=debian%3A12", "image save" },
        { "docker load", "POST", "/v1.41/images/load?quiet=0", "image load" },
        { "docker rmi", "DELETE", "/v1.41/images/team/app:1", "image rm" },
        { "docker image prune", "POST", "/v1.41/images/prune?filters=%7B%7D", "image prune,system prune" },
        { "docker build", "POST", "/v1.41/build?buildargs=%7B%7D&t=x&networkmode=default", "image build,builder build" },
        { "docker build (BuildKit session)", "POST", "/v1.41/session", "image build,builder build" },
        { "docker build (BuildKit)", "POST", "/v1.41/grpc", "image build,builder build" },
        { "docker builder prune", "POST", "/v1.41/build/prune", "builder prune,system prune" },
        { "docker volume ls", "GET", "/v1.41/volumes", "volume ls" },
        { "docker volume create", "POST", "/v1.41/volumes/create", "volume create" },
        { "docker volume inspect", "GET", "/v1.41/volumes/data", "volume inspect,inspect" },
        { "docker volume rm", "DELETE", "/v1.41/volumes/data?force=0", "volume rm" },
        { "docker volume prune", "POST", "/v1.41/volumes/prune?filters=%7B%7D", "volume prune,system prune" },
        { "docker network ls", "GET", "/v1.41/networks", "network ls" },
        { "docker network create", "POST", "/v1.41/networks/create", "network create" },
        { "docker network inspect", "GET", "/v1.41/networks/back", "network inspect,inspect" },
        { "docker network connect", "POST", "/v1.41/networks/back/connect", "network connect" },
        { "docker network disconnect", "POST", "/v1.41/networks/back/disconnect", "network disconnect" },
        { "docker network rm", "DELETE", "/v1.41/networks/back", "network rm" },
        { "docker network prune", "POST", "/v1.41/networks/prune?filters=%7B%7D", "network prune,system prune" },
        { "docker plugin ls", "GET", "/v1.41/plugins", "plugin ls" },
        { "docker plugin install", "POST", "/v1.41/plugins/pull?remote=vieux%2Fsshfs", "plugin install" },
        { "docker plugin enable", "POST", "/v1.41/plugins/vieux/sshfs:latest/enable?timeout=30", "plugin enable" },
        { "docker service create", "POST", "/v1.41/services/create", "service create" },
        { "docker swarm init", "POST", "/v1.41/swarm/init", "swarm init" },
    };

    [Theory]
    [MemberData(nameof(CliRequests))]
    public void CliRequest_MatchesItsRoute_WithAndWithoutVersion(string command, string method, string target, string owners)
    {
        string path = target.Split('?')[0];
        string unversioned = DockerApiRoutes.SplitVersion(path).Path;
        foreach (var p in new[] { path, unversioned, "/v1.24" + unversioned, "/v1.50" + unversioned })
        {
            var route = DockerApiRoutes.Match(method, SocketRequestPolicy.DecodePath(p));
            Assert.True(route is not null, $"{command}: {method} {p} matches no route");
            Assert.Equal(owners, string.Join(',', route!.Owners));
        }
    }

    [Theory]
    [InlineData("/v1.41/containers/json", "1.41", "/containers/json")]
    [InlineData("/containers/json", null, "/containers/json")]
    [InlineData("/v1.41", "1.41", "/")]
    [InlineData("/version", null, "/version")] // "/v" followed by letters is a path, not a version
    [InlineData("/volumes", null, "/volumes")]
    [InlineData("/v/containers/json", null, "/v/containers/json")]
    public void SplitVersion(string path, string? version, string rest) =>
        Assert.Equal((version, rest), DockerApiRoutes.SplitVersion(path));

    [Theory]
    [InlineData("GET", "/v1.41/containers/web/logs/extra")]      // one segment too many
    [InlineData("GET", "/v1.41/containers//json")]                // an empty id
    [InlineData("PATCH", "/v1.41/containers/web/json")]           // a method the route does not have
    [InlineData("GET", "/v1.41/images//json")]                     // an empty image name
    [InlineData("GET", "/v1.41/nothing")]
    [InlineData("GET", "/v1.41/containers/json/")]                // dockerd's router has no trailing-slash redirects
    public void UnknownRequests_MatchNothing(string method, string path) => Assert.Null(DockerApiRoutes.Match(method, path));

    [Fact]
    public void ImageNamesWithSlashes_AreOneParameter()
    {
        const string path = "/v1.41/images/registry.local:5000/team/app/push";
        var route = DockerApiRoutes.Match("POST", path)!;
        Assert.Equal("registry.local:5000/team/app", DockerApiRoutes.Parameter(route, path, "name"));
        // An image named like a route's literal is still the image: deny "push" cannot be dodged by naming.
        Assert.Equal(["image push"], DockerApiRoutes.Match("POST", "/images/json/push")!.Owners);
        Assert.Equal(["image tag"], DockerApiRoutes.Match("POST", "/images/x/push/tag")!.Owners);
        // dockerd's {name:.*} at the end takes a trailing slash too: DELETE /images/x/ is an image rm.
        Assert.Equal(["image rm"], DockerApiRoutes.Match("DELETE", "/v1.41/images/x/")!.Owners);
        Assert.Null(DockerApiRoutes.Match("DELETE", "/v1.41/images/"));
    }

    [Fact]
    public void ContainerCreatingRoutes_HaveTheirKind()
    {
        Assert.Equal(RouteKind.ContainerCreate, DockerApiRoutes.Match("POST", "/v1.41/containers/create")!.Kind);
        Assert.Equal(RouteKind.ContainerUpdate, DockerApiRoutes.Match("POST", "/v1.41/containers/c/update")!.Kind);
        Assert.Equal(RouteKind.ExecCreate, DockerApiRoutes.Match("POST", "/v1.41/containers/c/exec")!.Kind);
        Assert.Equal(RouteKind.ExecStart, DockerApiRoutes.Match("POST", "/v1.41/exec/e/start")!.Kind);
        Assert.Equal(RouteKind.Attach, DockerApiRoutes.Match("POST", "/v1.41/containers/c/attach")!.Kind);
        Assert.Equal(RouteKind.ArchivePut, DockerApiRoutes.Match("PUT", "/v1.41/containers/c/archive")!.Kind);
        Assert.Equal(RouteKind.Build, DockerApiRoutes.Match("POST", "/v1.41/build")!.Kind);
        Assert.Equal(RouteKind.Refused, DockerApiRoutes.Match("POST", "/v1.41/services/create")!.Kind);
        Assert.Equal(RouteKind.Refused, DockerApiRoutes.Match("POST", "/v1.41/plugins/pull")!.Kind);
        Assert.Equal(["GET /containers/{id}/attach/ws", "POST /containers/{id}/attach", "POST /exec/{id}/start", "POST /session", "POST /grpc"],
            DockerApiRoutes.All.Where(r => r.Hijack).Select(r => r.ToString()));
    }

    [Fact]
    public void EveryRoute_IsReachable_AndEveryOwnerIsACommandName()
    {
        // A route shadowed by an earlier pattern would never be judged by its own owners.
        foreach (var route in DockerApiRoutes.All)
        {
            string path = string.Join('/', route.Pattern.Split('/').Select(s => s.StartsWith('{') ? "x" : s));
            Assert.Same(route, DockerApiRoutes.Match(route.Method, path));
        }
        foreach (var name in DockerApiRoutes.All.SelectMany(r => r.Owners.Concat(r.NeededBy)))
            Assert.Null(DockerCommands.Unknown(name.Contains(' ') ? name[..name.IndexOf(' ')] : name));
    }
}
