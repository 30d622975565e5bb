namespace SandboxRunc.Policy;

/// <summary>
/// The Docker Engine socket: a container that mounts it controls dockerd, so only images the admin lists
/// in enhancedContainerIsolation.dockerSocketMount.imageList may. The image is the one the container really
/// runs: its image ID from dockerd's container record. An allowed name counts through the image ID dockerd
/// resolves it to (repositories.json), so a container whose name matches but whose image is another one
/// (the tag moved since the container was created) is denied; "name@sha256:..." pins the registry digest,
/// which a local `docker tag` cannot forge. With allowDerivedImages, an image whose parent chain (legacy
/// builds) or whose layers (BuildKit keeps no parent) start with an allowed image's also passes.
/// Limitation: a plain name:tag trusts the local tag store, so `docker tag denied allowed:tag` before the
/// container is created makes the denied image that tag's image; pin a digest where that matters.
/// </summary>
public static class SocketPolicy
{
    public static void Check(AdminSettings settings, EngineFacts facts)
    {
        if (!IsAllowed(settings, facts))
            throw new PolicyException(
                $"docker socket mount denied for container with image \"{ImageReference.Shown(facts.Image?.Name)}\"; image is not in the allowed list");
    }

    public static bool IsAllowed(AdminSettings settings, EngineFacts facts)
    {
        var patterns = settings.SocketImages.Select(ImageReference.ParsePattern).Where(p => p is not null).Select(p => p!).ToList();
        if (patterns.Any(p => p.Kind == ImagePatternKind.All)) return true;
        if (facts.Image?.Id is not { Length: > 0 } imageId) return false; // not docker, or no record: unknown image
        foreach (var pattern in patterns)
            foreach (string allowedId in Resolve(pattern, facts.Tags))
                if (allowedId == imageId || settings.AllowDerivedImages && IsDerived(imageId, allowedId, facts.LookupImage))
                    return true;
        return false;
    }

    /// <summary>The image IDs an allow-list entry names in dockerd's tag store.</summary>
    static IEnumerable<string> Resolve(ImagePattern pattern, IReadOnlyDictionary<string, string> tags)
    {
        var r = pattern.Reference!;
        return pattern.Kind switch
        {
            ImagePatternKind.Tag or ImagePatternKind.Digest => tags.TryGetValue(r.ToString(), out var id) ? [id] : [],
            ImagePatternKind.AnyTag => tags.Where(t => ImageReference.Parse(t.Key)?.Repository == r.Repository).Select(t => t.Value).Distinct(),
            _ => [],
        };
    }

    static bool IsDerived(string imageId, string baseId, Func<string, StoredImage?> lookup)
    {
        var start = lookup(imageId);
        var seen = new HashSet<string> { imageId };
        for (var img = start; img?.Parent is { } parent && seen.Add(parent); img = lookup(parent))
            if (parent == baseId) return true;
        var baseImage = lookup(baseId);
        return start is not null && baseImage is { Layers.Count: > 0 } && baseImage.Layers.Count <= start.Layers.Count
            && baseImage.Layers.SequenceEqual(start.Layers.Take(baseImage.Layers.Count));
    }
}
