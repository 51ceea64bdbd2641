namespace NativeRelay.Traffic.Sources;

/// <summary>
/// A pool: a weighted set of egress sources. A message's job takes the next source of a fixed
/// schedule in which each source appears weight times out of the total, interleaved smoothly
/// (nginx's smooth weighted round robin: 3:1 gives A A B A, not A A A B), so the weights hold
/// exactly over any run of jobs, not only on average. The position is one interlocked counter,
/// shared by every thread; a pool of one source needs none.
/// </summary>
public sealed class EgressPool
{
    private readonly EgressSource[] _schedule;
    private long _next = -1;

    internal EgressPool(string name, IReadOnlyList<(EgressSource Source, int Weight)> members)
    {
        if (members.Count == 0)
            throw new ArgumentException("a pool needs a source", nameof(members));
        Name = name;
        Members = members;
        _schedule = Schedule(members);
    }

    public string Name { get; }

    public IReadOnlyList<(EgressSource Source, int Weight)> Members { get; }

    /// <summary>The source for the next job of this pool.</summary>
    public EgressSource Next()
    {
        if (_schedule.Length == 1)
            return _schedule[0];
        long n = Interlocked.Increment(ref _next) & long.MaxValue;
        return _schedule[n % _schedule.Length];
    }

    /// <summary>
    /// Another source than <paramref name="avoid"/> that <paramref name="usable"/> accepts, taken
    /// in schedule order (so the weights still hold among the others); null when there is none.
    /// </summary>
    public EgressSource? NextOther(EgressSource avoid, Func<EgressSource, bool> usable)
    {
        if (Members.Count < 2)
            return null;
        long start = Interlocked.Increment(ref _next) & long.MaxValue;
        for (int i = 0; i < _schedule.Length; i++)
        {
            var candidate = _schedule[(start + i) % _schedule.Length];
            if (!ReferenceEquals(candidate, avoid) && usable(candidate))
                return candidate;
        }
        return null;
    }

    public bool Contains(EgressSource source)
    {
        foreach (var (s, _) in Members)
            if (ReferenceEquals(s, source))
                return true;
        return false;
    }

    /// <summary>Smooth weighted round robin over the weights divided by their greatest common divisor.</summary>
    internal static EgressSource[] Schedule(IReadOnlyList<(EgressSource Source, int Weight)> members)
    {
        int gcd = 0;
        foreach (var (_, w) in members)
            gcd = Gcd(gcd, w);
        var weights = new int[members.Count];
        int total = 0;
        for (int i = 0; i < weights.Length; i++)
            total += weights[i] = members[i].Weight / gcd;
        var schedule = new EgressSource[total];
        var current = new int[weights.Length];
        for (int step = 0; step < total; step++)
        {
            int best = 0;
            for (int i = 0; i < weights.Length; i++)
            {
                current[i] += weights[i];
                if (current[i] > current[best])
                    best = i;
            }
            current[best] -= total;
            schedule[step] = members[best].Source;
        }
        return schedule;
    }

    private static int Gcd(int a, int b)
    {
        while (b != 0)
            (a, b) = (b, a % b);
        return a;
    }

    public string Describe() => string.Join(", ", Members.Select(m => $"{m.Source.Name} x{m.Weight}"));

    public override string ToString() => Name;
}
