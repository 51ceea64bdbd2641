using System.Text;

namespace NativeRelay.Tools;

/// <summary>Failures that have no SMTP reply code: they happened before or instead of a reply.</summary>
public enum LocalFailure
{
    /// <summary>The TCP connection could not be made.</summary>
    Connect,
    /// <summary>The server closed or reset the connection while a reply was awaited.</summary>
    Lost,
    /// <summary>The run's time limit ended the transaction.</summary>
    Timeout,
    /// <summary>An interrupt (SIGINT, SIGTERM) ended the transaction.</summary>
    Interrupted,
    /// <summary>STARTTLS was not offered, refused, or the handshake failed.</summary>
    Tls,
    /// <summary>The server's reply could not be parsed.</summary>
    Protocol,
}

/// <summary>
/// Failed messages counted by the reply code that failed them (or a <see cref="LocalFailure"/>),
/// with the text of the first reply seen for each code. One instance per session (no locking);
/// counting never allocates, except the one string kept per distinct code.
/// </summary>
public sealed class ErrorCounts
{
    private const int Codes = 600;
    private const int LocalKinds = (int)LocalFailure.Protocol + 1;

    private readonly long[] _byCode = new long[Codes];
    private readonly string?[] _textByCode = new string?[Codes];
    private readonly long[] _byLocal = new long[LocalKinds];
    private readonly string?[] _textByLocal = new string?[LocalKinds];

    public long Total { get; private set; }

    public void Add(int code, ReadOnlySpan<byte> text)
    {
        Add(code);
        RememberText(code, text);
    }

    /// <summary>Counts a failure by its reply code (the text, if any, was kept by <see cref="RememberText"/>).</summary>
    public void Add(int code)
    {
        if (code is < 0 or >= Codes)
            code = 0;
        _byCode[code]++;
        Total++;
    }

    public bool HasText(int code) => code is >= 0 and < Codes && _textByCode[code] is not null;

    /// <summary>Keeps the text of the first reply seen with this code (one string per code).</summary>
    public void RememberText(int code, ReadOnlySpan<byte> text)
    {
        if (code is < 0 or >= Codes || _textByCode[code] is not null)
            return;
        _textByCode[code] = Encoding.ASCII.GetString(text.Length > 200 ? text[..200] : text);
    }

    public void Add(LocalFailure kind, string? detail)
    {
        _byLocal[(int)kind]++;
        Total++;
        _textByLocal[(int)kind] ??= detail;
    }

    /// <summary>The key a local failure has in summaries.</summary>
    public static string Name(LocalFailure kind) => kind switch
    {
        LocalFailure.Connect => "connect",
        LocalFailure.Lost => "lost",
        LocalFailure.Timeout => "timeout",
        LocalFailure.Interrupted => "interrupted",
        LocalFailure.Tls => "tls",
        _ => "protocol",
    };

    public long Count(int code) => code is >= 0 and < Codes ? _byCode[code] : 0;

    public long Count(LocalFailure kind) => _byLocal[(int)kind];

    public void Merge(ErrorCounts other)
    {
        for (int i = 0; i < Codes; i++)
        {
            _byCode[i] += other._byCode[i];
            _textByCode[i] ??= other._textByCode[i];
        }
        for (int i = 0; i < LocalKinds; i++)
        {
            _byLocal[i] += other._byLocal[i];
            _textByLocal[i] ??= other._textByLocal[i];
        }
        Total += other.Total;
    }

    /// <summary>Every non-zero count: reply codes ("550") first in order, then local kinds ("connect").</summary>
    public IEnumerable<(string Key, long Count, string? Text)> Entries()
    {
        for (int i = 0; i < Codes; i++)
            if (_byCode[i] != 0)
                yield return (i.ToString(System.Globalization.CultureInfo.InvariantCulture), _byCode[i], _textByCode[i]);
        for (int i = 0; i < LocalKinds; i++)
            if (_byLocal[i] != 0)
                yield return (Name((LocalFailure)i), _byLocal[i], _textByLocal[i]);
    }
}
