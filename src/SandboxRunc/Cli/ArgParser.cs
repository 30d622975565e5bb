namespace SandboxRunc.Cli;

/// <summary>A command line that cannot be understood (unknown flag, missing argument, a value that is not a number).</summary>
public sealed class UsageException(string message) : SandboxRuncException(message);

/// <summary>
/// runc's command-line grammar (urfave/cli v1): `-f`, `--flag`, `-flag`, `--flag=value` and `--flag value`
/// all accepted; `--` ends the flags. As urfave/cli reorders a command's arguments, flags may come after
/// positional arguments (`kill ID KILL --all`, `policy check --id X BUNDLE`), except where the command's
/// own arguments may look like flags (`exec ID CMD -x`, `ps ID -ef`, and the global flags before the command).
/// </summary>
public sealed class ArgParser
{
    readonly Dictionary<string, (string Canonical, bool TakesValue)> _flags = new(StringComparer.Ordinal);

    /// <summary>A flag; one that takes a value may be repeated (`-e A=1 -e B=2`): <see cref="Result.All"/> has every value.</summary>
    public ArgParser Flag(string names, bool takesValue = false)
    {
        var all = names.Split('|');
        foreach (var n in all) _flags[n] = (all[0], takesValue);
        return this;
    }

    public sealed class Result
    {
        public Dictionary<string, string> Values { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, List<string>> Repeated { get; } = new(StringComparer.Ordinal);
        public IReadOnlyList<string> All(string name) => Repeated.TryGetValue(name, out var v) ? v : [];
        public HashSet<string> Switches { get; } = new(StringComparer.Ordinal);
        public List<string> Positional { get; } = [];
        public string? Get(string name) => Values.TryGetValue(name, out var v) ? v : null;
        public bool Has(string name) => Switches.Contains(name);
    }

    /// <summary>Parses flags anywhere; with <paramref name="stopAtPositional"/>, only up to the first positional argument.</summary>
    public Result Parse(IReadOnlyList<string> args, int start = 0, bool stopAtPositional = false)
    {
        var r = new Result();
        bool flagsDone = false;
        for (int i = start; i < args.Count; i++)
        {
            string a = args[i];
            // "-3" is no flag (none has a numeric name): a negative number is an argument (`kill ID -3` names the signal).
            if (flagsDone || a == "-" || !a.StartsWith('-') || (a.Length > 1 && a.AsSpan(1).IndexOfAnyExceptInRange('0', '9') < 0))
            {
                r.Positional.Add(a);
                if (stopAtPositional) flagsDone = true;
                continue;
            }
            if (a == "--") { flagsDone = true; continue; }
            string body = a.TrimStart('-');
            string? inline = null;
            int eq = body.IndexOf('=');
            if (eq >= 0) { inline = body[(eq + 1)..]; body = body[..eq]; }
            if (!_flags.TryGetValue(body, out var spec))
                throw new UsageException($"flag provided but not defined: -{body}");
            if (spec.TakesValue)
            {
                string value = inline ?? (i + 1 < args.Count ? args[++i] : throw new UsageException($"flag needs an argument: -{body}"));
                r.Values[spec.Canonical] = value;
                if (!r.Repeated.TryGetValue(spec.Canonical, out var list)) r.Repeated[spec.Canonical] = list = [];
                list.Add(value);
            }
            else if (inline is null || inline is "true" or "1")
            {
                r.Switches.Add(spec.Canonical);
            }
            else if (inline is not ("false" or "0"))
            {
                throw new UsageException($"invalid boolean value \"{inline}\" for -{body}");
            }
        }
        return r;
    }
}
