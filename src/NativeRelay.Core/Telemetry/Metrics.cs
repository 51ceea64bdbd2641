using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace NativeRelay.Telemetry;

/// <summary>One metric family in the registry: it knows its name and how to write itself in the Prometheus text format.</summary>
public abstract class Metric
{
    protected Metric(string name, string help)
    {
        if (!IsValidName(name))
            throw new ArgumentException($"'{name}' is not a Prometheus metric name", nameof(name));
        Name = name;
        Help = help;
    }

    public string Name { get; }
    public string Help { get; }
    protected abstract string Type { get; }

    internal void Write(StringBuilder sb)
    {
        sb.Append("# HELP ").Append(Name).Append(' ');
        foreach (char c in Help)
        {
            if (c == '\\') sb.Append("\\\\");
            else if (c == '\n') sb.Append("\\n");
            else sb.Append(c);
        }
        sb.Append('\n').Append("# TYPE ").Append(Name).Append(' ').Append(Type).Append('\n');
        WriteSamples(sb);
    }

    protected abstract void WriteSamples(StringBuilder sb);

    protected static void Sample(StringBuilder sb, string name, string? labels, double value)
    {
        sb.Append(name);
        if (!string.IsNullOrEmpty(labels))
            sb.Append('{').Append(labels).Append('}');
        sb.Append(' ').Append(FormatValue(value)).Append('\n');
    }

    protected static void Sample(StringBuilder sb, string name, string? labels, long value)
    {
        sb.Append(name);
        if (!string.IsNullOrEmpty(labels))
            sb.Append('{').Append(labels).Append('}');
        sb.Append(' ').Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
    }

    internal static string FormatValue(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf"
        : double.IsNegativeInfinity(value) ? "-Inf"
        : double.IsNaN(value) ? "NaN"
        : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>name="value" with the value escaped as the text format wants (\\, \", \n).</summary>
    public static string Label(string name, string value)
    {
        var sb = new StringBuilder(name.Length + value.Length + 4);
        sb.Append(name).Append("=\"");
        foreach (char c in value)
        {
            if (c == '\\') sb.Append("\\\\");
            else if (c == '"') sb.Append("\\\"");
            else if (c == '\n') sb.Append("\\n");
            else sb.Append(c);
        }
        return sb.Append('"').ToString();
    }

    public static bool IsValidName(string name)
    {
        if (name.Length == 0 || char.IsAsciiDigit(name[0]))
            return false;
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or ':'))
                return false;
        return true;
    }
}

/// <summary>A number that only goes up (messages, bytes). Increments are lock-free.</summary>
public sealed class Counter : Metric
{
    private long _value;
    private readonly string? _labels;

    public Counter(string name, string help, string? labels = null) : base(name, help) => _labels = labels;

    protected override string Type => "counter";

    public long Value => Volatile.Read(ref _value);

    public void Increment() => Interlocked.Increment(ref _value);

    public void Add(long amount)
    {
        if (amount > 0)
            Interlocked.Add(ref _value, amount);
    }

    protected override void WriteSamples(StringBuilder sb) => Sample(sb, Name, _labels, Value);
}

/// <summary>
/// A value that another component keeps (the process's CPU time, the runtime's GC totals), read
/// from a callback when scraped and written as a counter or a gauge. Fractional, unlike
/// <see cref="Counter"/>: seconds of CPU are not whole.
/// </summary>
public sealed class SampledMetric(string name, string help, bool counter, Func<double> read) : Metric(name, help)
{
    protected override string Type => counter ? "counter" : "gauge";

    protected override void WriteSamples(StringBuilder sb)
    {
        double value;
        try { value = read(); } catch (Exception) { value = 0; } // a scrape must never fail on a callback
        Sample(sb, Name, null, value);
    }
}

/// <summary>A number that goes up and down (open connections), or is read from a callback when scraped.</summary>
public sealed class Gauge : Metric
{
    private long _value;
    private Func<long>? _source;

    public Gauge(string name, string help) : base(name, help) { }

    protected override string Type => "gauge";

    public long Value => _source is { } s ? s() : Volatile.Read(ref _value);

    public void Set(long value) => Volatile.Write(ref _value, value);
    public void Increment() => Interlocked.Increment(ref _value);
    public void Decrement() => Interlocked.Decrement(ref _value);
    public void Add(long amount) => Interlocked.Add(ref _value, amount);

    /// <summary>From now on the value is whatever the callback returns at scrape time (null: back to Set/Add).</summary>
    public void SetSource(Func<long>? source) => _source = source;

    protected override void WriteSamples(StringBuilder sb) => Sample(sb, Name, null, SafeValue());

    private long SafeValue()
    {
        try
        {
            return Value;
        }
        catch (Exception)
        {
            return 0; // a scrape must never take down the stage that owns the callback
        }
    }
}

/// <summary>
/// A gauge (or, made with <c>counter: true</c>, a counter) with one label whose values are fixed
/// when it is made ("state" = active, deferred, ...), so the number of series can never grow.
/// </summary>
public sealed class GaugeVec : Metric
{
    private readonly string[] _labels;
    private readonly long[] _values;
    private readonly Func<long>?[] _sources;

    private readonly bool _counter;

    public GaugeVec(string name, string help, string labelName, params string[] labelValues)
        : this(name, help, counter: false, labelName, labelValues) { }

    /// <param name="counter">Written as a counter family: every value only goes up (collections by generation).</param>
    public GaugeVec(string name, string help, bool counter, string labelName, params string[] labelValues) : base(name, help)
    {
        _counter = counter;
        _labels = labelValues.Select(v => Label(labelName, v)).ToArray();
        LabelValues = labelValues;
        _values = new long[labelValues.Length];
        _sources = new Func<long>?[labelValues.Length];
    }

    public IReadOnlyList<string> LabelValues { get; }

    protected override string Type => _counter ? "counter" : "gauge";

    public int IndexOf(string labelValue)
    {
        int i = Array.IndexOf((string[])LabelValues, labelValue);
        return i >= 0 ? i : throw new ArgumentException($"{Name} has no label value '{labelValue}'");
    }

    private Action<long[]>? _snapshot;

    public long Get(int index)
    {
        if (Volatile.Read(ref _snapshot) is { } fill)
        {
            var values = new long[_values.Length];
            fill(values);
            return values[index];
        }
        return _sources[index] is { } s ? s() : Volatile.Read(ref _values[index]);
    }

    public void Set(int index, long value) => Volatile.Write(ref _values[index], value);
    public void Add(int index, long amount) => Interlocked.Add(ref _values[index], amount);
    public void SetSource(int index, Func<long>? source) => _sources[index] = source;

    /// <summary>
    /// From now on every value comes from one call of <paramref name="fill"/> per scrape (one array
    /// slot per label value, in order), for sources that count all states in one pass.
    /// </summary>
    public void SetSnapshotSource(Action<long[]> fill) => Volatile.Write(ref _snapshot, fill);

    /// <summary>Removes the snapshot source if it is still <paramref name="fill"/> (a newer one stays).</summary>
    public void ClearSnapshotSource(Action<long[]> fill) => Interlocked.CompareExchange(ref _snapshot, null, fill);

    protected override void WriteSamples(StringBuilder sb)
    {
        long[]? snapshot = null;
        if (Volatile.Read(ref _snapshot) is { } fill)
        {
            snapshot = new long[_values.Length];
            try { fill(snapshot); } catch (Exception) { Array.Clear(snapshot); }
        }
        for (int i = 0; i < _labels.Length; i++)
        {
            long v;
            if (snapshot is not null)
                v = snapshot[i];
            else
                try { v = Get(i); } catch (Exception) { v = 0; }
            Sample(sb, Name, _labels[i], v);
        }
    }
}

/// <summary>
/// A histogram with fixed bucket bounds (Prometheus "le" buckets, cumulative when written).
/// <see cref="Observe"/> is lock-free: one interlocked increment for the bucket, one for the
/// count, and a compare-exchange loop for the sum.
/// </summary>
public sealed class Histogram : Metric
{
    private readonly double[] _bounds;
    private readonly long[] _counts; // per bucket, not cumulative; the last is +Inf
    private readonly string[] _bucketLabels;
    private long _count;
    private long _sumBits;

    public Histogram(string name, string help, params double[] bounds) : base(name, help)
    {
        if (bounds.Length == 0)
            throw new ArgumentException("a histogram needs at least one bucket", nameof(bounds));
        for (int i = 1; i < bounds.Length; i++)
            if (!(bounds[i] > bounds[i - 1]))
                throw new ArgumentException("bucket bounds must increase", nameof(bounds));
        _bounds = bounds;
        _counts = new long[bounds.Length + 1];
        _bucketLabels = bounds.Select(b => Label("le", FormatValue(b))).Append(Label("le", "+Inf")).ToArray();
    }

    protected override string Type => "histogram";

    public IReadOnlyList<double> Bounds => _bounds;

    public long Count => Volatile.Read(ref _count);

    public double Sum => BitConverter.Int64BitsToDouble(Volatile.Read(ref _sumBits));

    public void Observe(double value)
    {
        int i = 0;
        while (i < _bounds.Length && value > _bounds[i])
            i++;
        Interlocked.Increment(ref _counts[i]);
        long seen = Volatile.Read(ref _sumBits);
        while (true)
        {
            long next = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(seen) + value);
            long was = Interlocked.CompareExchange(ref _sumBits, next, seen);
            if (was == seen)
                break;
            seen = was;
        }
        Interlocked.Increment(ref _count);
    }

    /// <summary>Observes the seconds elapsed since a <see cref="System.Diagnostics.Stopwatch.GetTimestamp"/>.</summary>
    public void ObserveSince(long stopwatchTimestamp) =>
        Observe(System.Diagnostics.Stopwatch.GetElapsedTime(stopwatchTimestamp).TotalSeconds);

    /// <summary>The cumulative count of observations at or below each bound, +Inf last.</summary>
    public long[] CumulativeCounts()
    {
        var result = new long[_counts.Length];
        long running = 0;
        for (int i = 0; i < _counts.Length; i++)
        {
            running += Volatile.Read(ref _counts[i]);
            result[i] = running;
        }
        return result;
    }

    protected override void WriteSamples(StringBuilder sb)
    {
        var cumulative = CumulativeCounts();
        for (int i = 0; i < cumulative.Length; i++)
            Sample(sb, Name + "_bucket", _bucketLabels[i], cumulative[i]);
        Sample(sb, Name + "_sum", null, Sum);
        // The +Inf bucket holds every observation; use it as the count so the two always agree.
        Sample(sb, Name + "_count", null, cumulative[^1]);
    }
}

/// <summary>
/// Counters keyed by one label whose values come from outside (destinations): the first
/// <see cref="MaxSeries"/> distinct values get their own series, every later one is counted under
/// "other", so a flood of distinct domains cannot grow memory or the scrape without bound.
/// </summary>
public sealed class BoundedCounterVec : Metric
{
    public const string Other = "other";

    private readonly string _labelName;
    private readonly ConcurrentDictionary<string, StrongBox> _series = new(StringComparer.Ordinal);
    private readonly StrongBox _other;
    private int _count;

    public BoundedCounterVec(string name, string help, string labelName, int maxSeries) : base(name, help)
    {
        if (maxSeries < 0)
            throw new ArgumentOutOfRangeException(nameof(maxSeries));
        _labelName = labelName;
        MaxSeries = maxSeries;
        _other = new StrongBox(Label(labelName, Other));
    }

    public int MaxSeries { get; private set; }

    protected override string Type => "counter";

    /// <summary>Raises or lowers the cap; series already made stay.</summary>
    public void SetMaxSeries(int maxSeries) => MaxSeries = Math.Max(0, maxSeries);

    public int SeriesCount => Volatile.Read(ref _count);

    public void Increment(string labelValue) => Add(labelValue, 1);

    public void Add(string labelValue, long amount)
    {
        if (amount <= 0)
            return;
        Interlocked.Add(ref Find(labelValue).Value, amount);
    }

    public long Get(string labelValue) =>
        _series.TryGetValue(labelValue, out var box) ? Volatile.Read(ref box.Value)
        : labelValue == Other ? Volatile.Read(ref _other.Value) : 0;

    private StrongBox Find(string labelValue)
    {
        if (_series.TryGetValue(labelValue, out var box))
            return box;
        if (labelValue == Other)
            return _other;
        // Reserve a slot first so concurrent newcomers cannot overshoot the cap.
        if (Interlocked.Increment(ref _count) > MaxSeries)
        {
            Interlocked.Decrement(ref _count);
            return _other;
        }
        var made = new StrongBox(Label(_labelName, labelValue));
        var kept = _series.GetOrAdd(labelValue, made);
        if (!ReferenceEquals(kept, made))
            Interlocked.Decrement(ref _count); // another thread added the same value first
        return kept;
    }

    protected override void WriteSamples(StringBuilder sb)
    {
        foreach (var (_, box) in _series.OrderBy(p => p.Key, StringComparer.Ordinal))
            Sample(sb, Name, box.Labels, Volatile.Read(ref box.Value));
        Sample(sb, Name, _other.Labels, Volatile.Read(ref _other.Value));
    }

    private sealed class StrongBox(string labels)
    {
        public readonly string Labels = labels;
        public long Value;
    }
}

/// <summary>A set of metric families written together for one scrape.</summary>
public sealed class MetricsRegistry
{
    private readonly List<Metric> _metrics = [];
    private readonly object _lock = new();

    public T Add<T>(T metric) where T : Metric
    {
        lock (_lock)
        {
            foreach (var m in _metrics)
                if (m.Name == metric.Name)
                    throw new ArgumentException($"metric {metric.Name} is registered twice");
            _metrics.Add(metric);
        }
        return metric;
    }

    public Counter Counter(string name, string help) => Add(new Counter(name, help));
    public Gauge Gauge(string name, string help) => Add(new Gauge(name, help));
    public GaugeVec GaugeVec(string name, string help, string labelName, params string[] values) => Add(new GaugeVec(name, help, labelName, values));
    public Histogram Histogram(string name, string help, params double[] bounds) => Add(new Histogram(name, help, bounds));
    public BoundedCounterVec BoundedCounterVec(string name, string help, string labelName, int maxSeries) => Add(new BoundedCounterVec(name, help, labelName, maxSeries));
    public SampledMetric SampledCounter(string name, string help, Func<double> read) => Add(new SampledMetric(name, help, counter: true, read));
    public SampledMetric SampledGauge(string name, string help, Func<double> read) => Add(new SampledMetric(name, help, counter: false, read));

    /// <summary>The whole registry in the Prometheus text exposition format, version 0.0.4.</summary>
    public string Render()
    {
        var sb = new StringBuilder(4096);
        Metric[] metrics;
        lock (_lock)
            metrics = _metrics.ToArray();
        foreach (var m in metrics)
            m.Write(sb);
        return sb.ToString();
    }
}
