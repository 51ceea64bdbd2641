using System.Buffers;
using System.Net;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Control;
using NativeRelay.Local;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Dmarc;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Maildrop;
using NativeRelay.Message;
using NativeRelay.Smtp;
using NativeRelay.Smtp.Auth;
using NativeRelay.Spool;
using NativeRelay.Tools;

namespace NativeRelay.Fuzz;

/// <summary>
/// One fuzz target per parser that reads bytes from outside. Each feeds the input to the parser
/// the way the relay does and lets through only the outcomes the parser documents (a status, a
/// false, null, or the one exception type its caller catches); anything else escapes and is a
/// finding. The test project compiles this file too: FuzzRegressionTests replays every committed
/// seed and every past finding through the same target.
/// </summary>
public static class Targets
{
    public static readonly IReadOnlyDictionary<string, Action<byte[]>> All = new Dictionary<string, Action<byte[]>>(StringComparer.Ordinal)
    {
        ["smtp-command"] = SmtpCommand,
        ["mailbox-path"] = MailboxPathAndParameters,
        ["auth"] = Auth,
        ["data"] = Data,
        ["bdat"] = Bdat,
        ["headers"] = Headers,
        ["smtp-reply"] = SmtpReplyTarget,
        ["control"] = Control,
        ["config"] = Config,
        ["aliases"] = Aliases,
        ["spool-record"] = SpoolRecord,
        ["maildrop"] = MaildropTarget,
        ["spf"] = Spf,
        ["dmarc"] = Dmarc,
        ["domain"] = Domain,
        ["dkim"] = Dkim,
        ["mta-sts"] = MtaSts,
        ["tls-rpt"] = TlsRpt,
        ["bounce-rules"] = BounceRules,
        ["suppression-journal"] = SuppressionJournalTarget,
        ["shaping"] = Shaping,
        ["api"] = Api,
        ["tlsa"] = Tlsa,
    };

    /// <summary>Splits input into a sequence of segments at lengths drawn from a seed byte, so line and reply readers meet every split.</summary>
    internal static ReadOnlySequence<byte> Segmented(ReadOnlyMemory<byte> data, byte seed)
    {
        if (data.IsEmpty || seed == 0)
            return new ReadOnlySequence<byte>(data);
        int step = seed & 0x3F;
        if (step == 0)
            step = 1;
        Segment first = new(data[..Math.Min(step, data.Length)]), last = first;
        for (int at = step; at < data.Length; at += step)
            last = last.Append(data.Slice(at, Math.Min(step, data.Length - at)));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }

    private static (byte Seed, byte[] Body) Split(byte[] data) =>
        data.Length == 0 ? ((byte)0, data) : (data[0], data[1..]);

    // ---- SMTP server side -------------------------------------------------------------------

    /// <summary>The command line reader over any segmentation, then the verb parser and, for MAIL/RCPT, the path and parameters.</summary>
    public static void SmtpCommand(byte[] data)
    {
        var (seed, rest) = Split(data);
        var buffer = Segmented(rest, seed);
        Span<byte> scratch = stackalloc byte[CommandLineReader.MaxCommandLineLength];
        bool skipping = false;
        for (int guard = 0; guard <= rest.Length + 1 && !buffer.IsEmpty; guard++)
        {
            if (skipping)
            {
                if (!CommandLineReader.TrySkipPastLineEnd(buffer, out var consumedTo))
                    return;
                buffer = buffer.Slice(consumedTo);
                skipping = false;
                continue;
            }
            var status = CommandLineReader.TryReadLine(buffer, CommandLineReader.MaxCommandLineLength, scratch, out var line, out var end);
            if (status == LineStatus.NeedMoreData)
                return;
            if (status == LineStatus.TooLong)
            {
                buffer = buffer.Slice(end);
                skipping = true;
                continue;
            }
            Command(line);
            buffer = buffer.Slice(end);
        }
    }

    private static void Command(ReadOnlySpan<byte> line)
    {
        var verb = SmtpCommandParser.Parse(line, out var argument);
        if (verb is SmtpVerb.Mail or SmtpVerb.Rcpt)
            Path(argument, verb == SmtpVerb.Mail ? MailboxPath.MailFromPrefix : MailboxPath.RcptToPrefix, utf8: line.Length % 2 == 0);
        else if (verb == SmtpVerb.Bdat)
            EsmtpParameters.TryParseSize(argument, out _);
        else if (verb == SmtpVerb.Auth)
            Sasl.ParseMechanism(argument);
    }

    private static void Path(ReadOnlySpan<byte> argument, ReadOnlySpan<byte> prefix, bool utf8)
    {
        var error = MailboxPath.Parse(argument, prefix, utf8, allowBareAddress: !utf8, out var address, out var parameters);
        if (error != PathError.None)
            return;
        if (MailboxPath.TrySplit(address, out _, out var domain))
            MailboxPath.ValidateDomain(domain, utf8);
        MailboxPath.IsPostmaster(address);
        if (!EsmtpParameters.IsWellFormed(parameters, utf8))
            return;
        Span<byte> decoded = stackalloc byte[512];
        foreach (var p in new EsmtpParameters(parameters, utf8))
        {
            if (EsmtpParameters.KeywordEquals(p.Keyword, "SIZE"u8))
                EsmtpParameters.TryParseSize(p.Value, out _);
            else
                EsmtpParameters.DecodeXtext(p.Value, decoded, out _);
        }
    }

    /// <summary>A MAIL or RCPT argument (first byte picks which and the SMTPUTF8 switch).</summary>
    public static void MailboxPathAndParameters(byte[] data)
    {
        var (seed, rest) = Split(data);
        Path(rest, (seed & 1) == 0 ? MailboxPath.MailFromPrefix : MailboxPath.RcptToPrefix, utf8: (seed & 2) != 0);
        // The parameters alone, as they follow any path.
        bool utf8 = (seed & 4) != 0;
        if (EsmtpParameters.IsWellFormed(rest, utf8))
        {
            Span<byte> decoded = stackalloc byte[64];
            foreach (var p in new EsmtpParameters(rest, utf8))
                EsmtpParameters.DecodeXtext(p.Value, decoded, out _);
        }
    }

    /// <summary>AUTH responses: base64 lines, then the PLAIN message inside.</summary>
    public static void Auth(byte[] data)
    {
        foreach (var range in data.AsSpan().Split((byte)'\n'))
        {
            var line = data.AsSpan()[range];
            if (!line.IsEmpty && line[^1] == '\r')
                line = line[..^1];
            if (Sasl.IsCancel(line))
                continue;
            var decoded = Sasl.DecodeResponse(line);
            if (decoded is not null)
                Sasl.TryParsePlain(decoded, out _, out _);
        }
        Sasl.TryParsePlain(data, out _, out _);
    }

    /// <summary>DATA: the unstuffer over chunks of any size, with small limits so they are reached.</summary>
    public static void Data(byte[] data)
    {
        var (seed, rest) = Split(data);
        var unstuffer = new DotUnstuffer(maxLineLength: 16 + (seed & 0x3F), maxMessageSize: 64 + seed * 4);
        var output = new ArrayBufferWriter<byte>();
        int chunk = 1 + (seed >> 2);
        int at = 0;
        while (at < rest.Length)
        {
            int n = Math.Min(chunk, rest.Length - at);
            var status = unstuffer.Process(rest.AsSpan(at, n), output, out int consumed);
            if (consumed < 0 || consumed > n)
                throw new InvalidOperationException($"consumed {consumed} of {n}");
            if (status != DataStatus.NeedMoreData)
            {
                // A message after the terminator (pipelining) starts afresh.
                unstuffer.Reset();
                output.Clear();
                at += Math.Max(consumed, 1);
                continue;
            }
            if (consumed != n)
                throw new InvalidOperationException($"NeedMoreData consumed {consumed} of {n}");
            at += n;
        }
    }

    /// <summary>BDAT: chunk sizes from the input (a byte each, after a count), the rest as the chunks' bytes.</summary>
    public static void Bdat(byte[] data)
    {
        if (data.Length < 2)
            return;
        int chunks = 1 + (data[0] & 7);
        var sizes = data.AsSpan(1, Math.Min(chunks, data.Length - 1));
        var body = data.AsSpan(1 + sizes.Length);
        var reader = new BdatReader(maxLineLength: 32 + (data[0] >> 3), maxMessageSize: 256);
        var output = new ArrayBufferWriter<byte>();
        reader.StartMessage();
        for (int i = 0; i < sizes.Length; i++)
        {
            bool last = i == sizes.Length - 1;
            long size = last ? body.Length : Math.Min(sizes[i], body.Length);
            reader.StartChunk(size, last);
            var piece = body[..(int)size];
            while (!piece.IsEmpty)
            {
                int n = reader.Consume(piece[..Math.Min(piece.Length, 7 + i)], output);
                if (n <= 0 || n > piece.Length)
                    throw new InvalidOperationException($"Consume returned {n} of {piece.Length}");
                piece = piece[n..];
            }
            body = body[(int)size..];
        }
        if (!reader.Failed)
            reader.FinishMessage(output);
    }

    /// <summary>The header scanner and the readers built on it (From domain for DMARC, Authentication-Results).</summary>
    public static void Headers(byte[] data)
    {
        var scanner = new HeaderScanner(data);
        int fields = 0;
        while (scanner.TryReadNext(out var field))
        {
            if (++fields > data.Length + 1)
                throw new InvalidOperationException("the scanner does not advance");
        }
        HeaderScanner.CountFields(data, "Received"u8);
        HeaderScanner.TryFindFirst(data, "From"u8, out _);
        FromDomain.Find(data);
        var ours = AuthenticationResults.FindOurs(data, "mx.example.test");
        var copy = new ArrayBufferWriter<byte>();
        AuthenticationResults.CopyWithout(data, ours, copy);
        AuthenticationResults.ObscureInPlace(data.ToArray(), ours);
        AuthenticationResults.TryReadAuthservId(data, out _);
    }

    // ---- SMTP client side -------------------------------------------------------------------

    private static readonly MethodInfo ClientTryParseReply =
        typeof(SmtpClientSession).GetMethod("TryParseReply", BindingFlags.NonPublic | BindingFlags.Instance)
        ?? throw new MissingMethodException(nameof(SmtpClientSession), "TryParseReply");

    /// <summary>Replies as both readers see them: the tools' SmtpReplyParser and the delivery client's own reader.</summary>
    public static void SmtpReplyTarget(byte[] data)
    {
        var (seed, rest) = Split(data);
        var buffer = Segmented(rest, seed);
        Span<byte> scratch = stackalloc byte[SmtpReplyParser.MaxLineLength];
        var capabilities = default(SmtpCapabilities);
        for (int guard = 0; guard <= rest.Length + 1; guard++)
        {
            var before = buffer.Length;
            var status = SmtpReplyParser.TryRead(ref buffer, scratch, out _, out _, ref capabilities, parseCapabilities: (seed & 1) != 0);
            if (status != ReplyStatus.Complete || buffer.Length >= before)
                break;
        }

        // The delivery client (SmtpClientSession.TryParseReply): its only documented failure is
        // SmtpSessionException (a malformed reply), which ends the connection.
        var session = (SmtpClientSession)RuntimeHelpers.GetUninitializedObject(typeof(SmtpClientSession));
        var sequence = Segmented(rest, seed);
        for (int guard = 0; guard <= rest.Length + 1; guard++)
        {
            object?[] args = [sequence, (seed & 2) != 0, (seed & 4) != 0, null];
            try
            {
                if (!(bool)ClientTryParseReply.Invoke(session, args)!)
                    break;
            }
            catch (TargetInvocationException e) when (e.InnerException is SmtpSessionException)
            {
                break;
            }
            catch (TargetInvocationException e)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException!).Throw();
            }
            var next = (ReadOnlySequence<byte>)args[0]!;
            if (next.Length >= sequence.Length)
                throw new InvalidOperationException("a complete reply consumed nothing");
            sequence = next;
        }
    }

    // ---- Local files and sockets ------------------------------------------------------------

    /// <summary>A control socket request line (JSON) and, the other way, a response.</summary>
    public static void Control(byte[] data)
    {
        string line = Encoding.UTF8.GetString(data);
        try
        {
            var request = JsonSerializer.Deserialize(line, ControlJsonContext.Default.ControlRequest);
            if (request?.Id is { } id)
                QueueIdGenerator.TryParse(id, out _);
        }
        catch (JsonException)
        {
        }
        try
        {
            JsonSerializer.Deserialize(line, ControlJsonContext.Default.ControlResponse);
        }
        catch (JsonException)
        {
        }
    }

    /// <summary>
    /// A bounce rules file (bounces.classRules), then the rules at work on a reply the input also
    /// supplies (its last line); ConfigException is the documented failure of the file.
    /// </summary>
    public static void BounceRules(byte[] data)
    {
        string text = Encoding.UTF8.GetString(data);
        int nl = text.LastIndexOf('\n');
        string reply = nl < 0 ? text : text[(nl + 1)..];
        NativeRelay.Traffic.Bounces.EnhancedStatus.Parse(reply);
        NativeRelay.Traffic.Bounces.BounceClassifier.Default.Classify(reply.Length >= 3 && int.TryParse(reply.AsSpan(0, 3), out int c) ? c : 550, reply, local: false);
        try
        {
            var rules = NativeRelay.Traffic.Bounces.BounceRulesReader.Parse(text, "fuzz.json");
            NativeRelay.Traffic.Bounces.BounceClassifier.FromRules(rules).Classify(new SmtpReply(550, reply), local: true);
        }
        catch (ConfigException)
        {
        }
    }

    /// <summary>A suppression list journal as opening reads it (after the header): records until the first one cut short or damaged.</summary>
    public static void SuppressionJournalTarget(byte[] data)
    {
        using var stream = new MemoryStream(data);
        var reader = new NativeRelay.Traffic.Suppression.SuppressionJournalReader(stream, 0, data.Length);
        foreach (var (record, offset) in reader.Records())
        {
            if (offset < 0 || offset >= data.Length || record.Address.Length == 0)
                throw new InvalidOperationException("a record out of the input");
            NativeRelay.Traffic.Suppression.SuppressionScope.TryParse(record.Scope, out _, out _);
        }
        if (reader.End > data.Length)
            throw new InvalidOperationException("the valid part ends past the input");
    }

    /// <summary>The JSON configuration file, then its validation; ConfigException is the documented failure.</summary>
    public static void Config(byte[] data)
    {
        try
        {
            var options = RelaySettings.ParseText(Encoding.UTF8.GetString(data), "fuzz.json");
            RelaySettings.Validate(options);
        }
        catch (ConfigException)
        {
        }
    }

    /// <summary>
    /// The shaping rules file (traffic control), then its automation rules against replies taken
    /// from the input's lines (the text of a remote server's reply is what they run on).
    /// ConfigException is the documented failure of the file.
    /// </summary>
    public static void Shaping(byte[] data)
    {
        string text = Encoding.UTF8.GetString(data);
        NativeRelay.Traffic.Shaping.ShapingRules rules;
        try
        {
            var file = NativeRelay.Traffic.Shaping.ShapingFile.Parse(text, "fuzz-shaping.json");
            rules = NativeRelay.Traffic.Shaping.ShapingRules.Validate(file, "fuzz-shaping.json", new HashSet<string> { "default", "ip2" });
        }
        catch (ConfigException)
        {
            rules = NativeRelay.Traffic.Shaping.ShapingRules.Empty;
        }
        foreach (var line in text.Split('\n'))
        {
            var reply = new SmtpReply(line.Length >= 3 && int.TryParse(line.AsSpan(0, 3), out int code) ? code : 421, line.Length > 4 ? line[4..] : line);
            foreach (var rule in rules.Automation)
                rule.Matches(reply);
        }
    }

    /// <summary>The aliases file; ConfigException (with file and line) is the documented failure.</summary>
    public static void Aliases(byte[] data)
    {
        try
        {
            var table = AliasTable.Parse(Encoding.UTF8.GetString(data), "fuzz-aliases");
            table.TryGet("postmaster", out _);
        }
        catch (ConfigException)
        {
        }
    }

    /// <summary>Spool records as recovery reads them back, corrupted: head (envelope), status.</summary>
    public static void SpoolRecord(byte[] data)
    {
        if (MessageHead.TryParse(data) is { } head)
        {
            if (head.InlineOffset < 0 || head.InlineLength < 0 || head.InlineOffset + head.InlineLength > data.Length)
                throw new InvalidOperationException("inline bytes outside the record");
        }
        if (HeadLayout.TryRead(data, out var layout))
        {
            if (layout.IsCopy)
            {
                // Recovery reads the snapshot of a copied head only (SpoolRecovery).
                layout.SnapshotAttempts(data);
                layout.SnapshotFlags(data);
            }
            layout.SnapshotStates(data);
            for (int i = 0; i < layout.ChunkCount; i++)
                layout.ChunkAddress(data, i);
        }
        StatusRecord.TryParse(data, out _);
    }

    public static void MaildropTarget(byte[] data) => MaildropFile.TryParse(data, out _, out _);

    // ---- DNS-derived data -------------------------------------------------------------------

    // Made per run, never in a static initializer: instrumented Core code must not run before
    // SharpFuzz has set up afl's shared memory (it would write to a map that is not there yet).
    private static SpfMacroContext MacroContext() =>
        new(IPAddress.Parse("192.0.2.3"), "user@example.test", "example.test", "mx.example.test");

    /// <summary>An SPF TXT record, and the macro-strings in it expanded as the evaluator would.</summary>
    public static void Spf(byte[] data)
    {
        string text = Encoding.UTF8.GetString(data);
        SpfRecord.IsSpfRecord(text);
        if (SpfRecord.TryParse(text, out var record, out _))
        {
            foreach (var m in record.Mechanisms)
            {
                if (m.DomainSpec is { } spec && SpfMacro.IsValid(spec, false, out _))
                    SpfMacro.Expand(spec, MacroContext());
            }
        }
        if (SpfMacro.IsValid(text, true, out _))
            SpfMacro.Expand(text, MacroContext(), explanation: true);
    }

    public static void Dmarc(byte[] data)
    {
        string text = Encoding.UTF8.GetString(data);
        DmarcRecord.IsDmarcRecord(text);
        DmarcRecord.TryParse(text, out _, out _);
    }

    /// <summary>
    /// MTA-STS (RFC 8461): the input as a "_mta-sts" TXT record, as a policy body (what a policy
    /// host serves; a parsed policy's patterns are matched against a name), and as a cached policy
    /// file. Each refuses with null.
    /// </summary>
    public static void MtaSts(byte[] data)
    {
        string text = Encoding.UTF8.GetString(data);
        NativeRelay.TlsPolicies.MtaSts.MtaStsRecord.FromTxt([text], out _);
        if (NativeRelay.TlsPolicies.MtaSts.MtaStsPolicy.TryParse(text, out _) is { } policy)
        {
            policy.MatchesMx("mx.example.com");
            _ = policy.Lines;
        }
        NativeRelay.TlsPolicies.MtaSts.MtaStsStore.Parse(text);
    }

    /// <summary>TLS-RPT (RFC 8460): the input as a "_smtp._tls" TXT record and as a day's counts file (null when it does not parse).</summary>
    public static void TlsRpt(byte[] data)
    {
        NativeRelay.TlsPolicies.Reporting.TlsRptRecord.FromTxt([Encoding.UTF8.GetString(data)]);
        if (NativeRelay.TlsPolicies.Reporting.TlsRptDay.FromJson(data) is { } day)
            NativeRelay.TlsPolicies.Reporting.TlsRptReport.Json(day, "org", "contact@example.com", "id");
    }

    /// <summary>
    /// DKIM: a DKIM-Signature value through the tag-list parser (as the verifier reads one from a
    /// message), a key record as DNS gives it, and a key file's PEM text (ConfigException is its
    /// documented refusal).
    /// </summary>
    public static void Dkim(byte[] data)
    {
        Span<(Range Name, Range Value)> tags = stackalloc (Range, Range)[64];
        if (NativeRelay.MailAuth.Dkim.DkimTagList.TryParse(data, tags, out int count))
        {
            Span<byte> scratch = stackalloc byte[1024];
            foreach (var name in new[] { "v"u8.ToArray(), "a"u8.ToArray(), "b"u8.ToArray(), "bh"u8.ToArray(), "h"u8.ToArray(), "d"u8.ToArray() })
            {
                if (NativeRelay.MailAuth.Dkim.DkimTagList.TryGet(data, tags[..count], name, out var value) && data.AsSpan(value).Length <= scratch.Length)
                    NativeRelay.MailAuth.Dkim.DkimTagList.CopyWithoutWhitespace(data.AsSpan(value), scratch);
            }
        }
        string text = Encoding.UTF8.GetString(data);
        NativeRelay.MailAuth.Dkim.DkimKeyRecord.Parse(text, out _);
        try
        {
            using var key = NativeRelay.MailAuth.Dkim.DkimSigningKey.FromPem("fuzz.test", "s", "fuzz.pem", text);
        }
        catch (ConfigException)
        {
        }
    }

    /// <summary>Domain names from mail and DNS (an MX host, a From domain) through the Public Suffix List.</summary>
    public static void Domain(byte[] data)
    {
        MailboxPath.ValidateDomain(data, allowUtf8: true);
        string name = Encoding.UTF8.GetString(data);
        var psl = PublicSuffixList.Default;
        psl.GetPublicSuffix(name);
        psl.GetRegistrableDomain(name);
        psl.GetOrganizationalDomain(name);
        RelaySettings.IsValidHostname(name);
    }

    // The API target's token may use any pool and send as any domain, so every check is reached.
    // In a class of its own: Targets' static constructor runs before the fuzzer's coverage map is
    // set up, and building these runs instrumented code (an access violation under afl).
    private static class ApiFixture
    {
        public static readonly NativeRelay.Api.ApiToken Token = new("fuzz", [], [], null);
        public static readonly NativeRelay.Api.ApiConfiguration Configuration = new(
            new NativeRelay.Api.HttpSettings(new IPEndPoint(IPAddress.Loopback, 0), false, "tokens", 1 << 20, 100, 0, null),
            NativeRelay.Api.TokenStore.Empty("tokens"), null);
    }
    private static readonly DateTimeOffset FuzzNow = new(2026, 12, 7, 12, 0, 0, TimeSpan.Zero);

    /// <summary>
    /// An HTTP API injection body: the JSON parse, every check a request meets and the copies
    /// composed (MimeKit) for its first recipients, as the API does before it queues anything. An
    /// answer (400, 403, 413 or 422 with its error) or null is the documented outcome.
    /// </summary>
    public static void Api(byte[] data) =>
        NativeRelay.Api.InjectionService.CheckForFuzzing(data, ApiFixture.Token, ApiFixture.Configuration, 256 * 1024, FuzzNow);

    // A fixed chain for the TLSA target: a CA and the end-entity certificate it signed.
    private static readonly Lazy<(System.Security.Cryptography.X509Certificates.X509Certificate2 Leaf,
        System.Security.Cryptography.X509Certificates.X509Certificate2 Ca)> DaneChain = new(() =>
    {
        using var caKey = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var caRequest = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=fuzz CA", caKey, System.Security.Cryptography.HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new System.Security.Cryptography.X509Certificates.X509BasicConstraintsExtension(true, false, 0, true));
        var ca = caRequest.CreateSelfSigned(FuzzNow.AddDays(-1), FuzzNow.AddYears(10));
        using var leafKey = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var leafRequest = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=mx.fuzz.test", leafKey, System.Security.Cryptography.HashAlgorithmName.SHA256);
        var leaf = leafRequest.Create(ca, FuzzNow.AddDays(-1), FuzzNow.AddYears(5), [1, 2, 3, 4]);
        return (leaf, ca);
    });

    /// <summary>
    /// TLSA records as DNS gives them (DANE): the input is records, each a length byte and then
    /// its RDATA (usage, selector, matching type, association data), through the usable filter
    /// and the check against a fixed chain (the leaf and its CA as presented). A certificate
    /// problem or none is the documented outcome.
    /// </summary>
    public static void Tlsa(byte[] data)
    {
        var records = new List<NativeRelay.Routing.TlsaRecordData>();
        for (int i = 0; i < data.Length && records.Count < 8;)
        {
            int length = data[i++];
            if (length < 3 || i + length > data.Length)
                break;
            records.Add(new NativeRelay.Routing.TlsaRecordData(data[i], data[i + 1], data[i + 2], data.AsSpan(i + 3, length - 3).ToArray()));
            i += length;
        }
        var usable = NativeRelay.TlsPolicies.DaneMatcher.Usable(records);
        var (leaf, ca) = DaneChain.Value;
        NativeRelay.TlsPolicies.DaneMatcher.Check(usable, leaf, [ca], "mx.fuzz.test");
        foreach (var record in records)
            NativeRelay.TlsPolicies.DaneMatcher.Matches(record, leaf);
    }
}
