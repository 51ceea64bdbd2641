using System.Buffers;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Net;
using NativeRelay.Smtp;
using NativeRelay.Spool;

namespace NativeRelay.Tests.Unit;

/// <summary>The receiving side's pieces that need no socket: BDAT reading, DSN parameters, submission headers, settings.</summary>
public sealed class SmtpReceivingTests
{
    private static byte[] B(string s) => Encoding.Latin1.GetBytes(s);

    private static (BdatReader Reader, ArrayBufferWriter<byte> Output) Chunks(long maxSize = 1_000_000, int maxLine = 998, params (string Data, bool Last)[] chunks)
    {
        var reader = new BdatReader(maxLine, maxSize);
        var output = new ArrayBufferWriter<byte>();
        reader.StartMessage();
        foreach (var (data, last) in chunks)
        {
            var bytes = B(data);
            reader.StartChunk(bytes.Length, last);
            // Feed in uneven pieces, as TCP would.
            int at = 0;
            int piece = 1;
            while (at < bytes.Length)
            {
                int n = Math.Min(piece, bytes.Length - at);
                Assert.Equal(n, reader.Consume(bytes.AsSpan(at, n), output));
                at += n;
                piece = piece * 3 % 17 + 1;
            }

            Assert.Equal(0, reader.ChunkRemaining);
        }

        reader.FinishMessage(output);
        return (reader, output);
    }

    [Fact]
    public void Bdat_chunks_are_stored_byte_for_byte_without_unstuffing()
    {
        var (reader, output) = Chunks(chunks: [("Subject: x\r\n\r\n.leading dot\r\n", false), ("..two dots\r", false), ("\n.\r\n", true)]);

        Assert.False(reader.Failed);
        Assert.Equal("Subject: x\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n", Encoding.Latin1.GetString(output.WrittenSpan));
    }

    [Fact]
    public void Bdat_message_without_a_final_crlf_gets_one()
    {
        var (reader, output) = Chunks(chunks: [("Subject: x\r\n\r\nno line end", true)]);

        Assert.False(reader.Failed);
        Assert.Equal("Subject: x\r\n\r\nno line end\r\n", Encoding.Latin1.GetString(output.WrittenSpan));
    }

    [Theory]
    [InlineData("a\nb\r\n")]
    [InlineData("a\rb\r\n")]
    [InlineData("a\r\n.\n")]
    [InlineData("ends with a bare cr\r")]
    public void Bdat_content_with_a_bare_cr_or_lf_fails(string data)
    {
        var (reader, _) = Chunks(chunks: [(data, true)]);

        Assert.True(reader.BareLineEnding);
    }

    [Fact]
    public void Bdat_cr_and_lf_split_across_chunks_are_one_line_ending()
    {
        var (reader, output) = Chunks(chunks: [("line one\r", false), ("\nline two\r\n", true)]);

        Assert.False(reader.Failed);
        Assert.Equal("line one\r\nline two\r\n", Encoding.Latin1.GetString(output.WrittenSpan));
    }

    [Fact]
    public void Bdat_line_longer_than_the_limit_fails_and_998_passes()
    {
        Assert.False(Chunks(chunks: [(new string('x', 998) + "\r\n", true)]).Reader.Failed);
        Assert.True(Chunks(chunks: [(new string('x', 500), false), (new string('x', 499) + "\r\n", true)]).Reader.LineTooLong);
    }

    [Fact]
    public void Bdat_size_is_refused_when_declared_past_the_limit_and_nothing_more_is_stored()
    {
        var reader = new BdatReader(998, 100);
        var output = new ArrayBufferWriter<byte>();
        reader.StartMessage();
        reader.StartChunk(60, last: false);
        reader.Consume(new byte[60].AsSpan().ToArray().Select(_ => (byte)'a').ToArray(), output);
        reader.StartChunk(60, last: true);

        Assert.True(reader.SizeExceeded);
        Assert.Equal(60, reader.Consume(Enumerable.Repeat((byte)'b', 60).ToArray(), output));
        Assert.Equal(60, output.WrittenCount);
    }

    [Theory]
    [InlineData("100", 100L, false)]
    [InlineData("0 LAST", 0L, true)]
    [InlineData("42 last", 42L, true)]
    public void Bdat_arguments_parse(string argument, long size, bool last)
    {
        Assert.True(SmtpServerSession.TryParseBdat(B(argument), out long parsedSize, out bool parsedLast));
        Assert.Equal(size, parsedSize);
        Assert.Equal(last, parsedLast);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("10 LASTX")]
    [InlineData("10  LAST")]
    [InlineData("ten")]
    [InlineData("99999999999999999999999")]
    public void Bad_bdat_arguments_are_refused(string argument)
    {
        Assert.False(SmtpServerSession.TryParseBdat(B(argument), out _, out _));
    }

    [Theory]
    [InlineData("NEVER", DsnNotify.Never)]
    [InlineData("SUCCESS", DsnNotify.Success)]
    [InlineData("failure,Delay", DsnNotify.Failure | DsnNotify.Delay)]
    [InlineData("SUCCESS,FAILURE,DELAY", DsnNotify.Success | DsnNotify.Failure | DsnNotify.Delay)]
    [InlineData("NEVER,SUCCESS", DsnNotify.None)]
    [InlineData("SUCCESS,SUCCESS", DsnNotify.None)]
    [InlineData("SOMETIMES", DsnNotify.None)]
    [InlineData("SUCCESS,", DsnNotify.None)]
    [InlineData("", DsnNotify.None)]
    public void Notify_parameter_parses(string value, DsnNotify expected)
    {
        Assert.Equal(expected, SmtpServerSession.ParseNotify(B(value)));
    }

    [Theory]
    [InlineData("rfc822;bob@example.com", "rfc822;bob@example.com")]
    [InlineData("rfc822;bob+2Bext@example.com", "rfc822;bob+ext@example.com")]
    [InlineData("RFC822;a+3Db@x.test", "RFC822;a=b@x.test")]
    [InlineData("rfc822;a+0Db@x.test", null)]
    [InlineData("rfc822;", null)]
    [InlineData(";bob@example.com", null)]
    [InlineData("bob@example.com", null)]
    [InlineData("rfc822;bob+zz@example.com", null)]
    public void Orcpt_parameter_parses_and_refuses_control_characters(string value, string? expected)
    {
        var parsed = SmtpServerSession.ParseOrcpt(B(value));
        Assert.Equal(expected, parsed is null ? null : Encoding.Latin1.GetString(parsed));
    }

    [Fact]
    public void Header_facts_count_received_and_see_message_id_and_date()
    {
        var facts = HeaderFacts.Scan(B("Received: a\r\nRECEIVED: b\r\n\tfolded\r\nmessage-id: <x@y>\r\nSubject: s\r\n\r\nDate: in the body\r\n"));

        Assert.Equal(2, facts.ReceivedCount);
        Assert.True(facts.HasMessageId);
        Assert.False(facts.HasDate);
        Assert.True(facts.HeaderSectionComplete);
        Assert.False(HeaderFacts.Scan(B("Subject: cut off")).HeaderSectionComplete);
    }

    [Fact]
    public void Submission_headers_are_well_formed()
    {
        var time = new DateTimeOffset(2026, 3, 4, 5, 6, 7, TimeSpan.Zero);
        Span<byte> buffer = stackalloc byte[SubmissionHeaders.MaxLength];

        int n = SubmissionHeaders.WriteMessageId(buffer, time, "0123ABCD"u8, "mail.example.com"u8);
        Assert.Equal("Message-ID: <20260304050607.0123ABCD@mail.example.com>\r\n", Encoding.ASCII.GetString(buffer[..n]));
        n = SubmissionHeaders.WriteDate(buffer, time);
        Assert.Equal("Date: Wed, 4 Mar 2026 05:06:07 +0000\r\n", Encoding.ASCII.GetString(buffer[..n]));
    }

    [Fact]
    public void Receiving_options_have_safe_defaults()
    {
        var s = RelaySettings.Validate(new RelayOptions());

        Assert.Null(s.Tls);
        Assert.Null(s.UsersFile);
        Assert.False(s.AllowPlaintextAuth);
        Assert.Empty(s.AcceptedDomains);
        var listener = Assert.Single(s.Listeners);
        Assert.Equal(ListenerKind.Smtp, listener.Kind);
        Assert.Equal(100_000, s.Limits.MaxCommands);
        Assert.Equal(998, s.Limits.MaxLineLength);
        Assert.Equal(300, s.Limits.CommandTimeoutSeconds);
        Assert.Equal(600, s.Limits.DataTimeoutSeconds);
        Assert.Equal(25L * 1024 * 1024, s.Limits.MaxMessageSize);
        Assert.True(s.Limits.MaxRecipients > 100);
        Assert.True(s.Limits.MaxAuthFailures > 0);
    }

    [Fact]
    public void Listeners_tls_users_and_policy_options_are_validated()
    {
        var o = new RelayOptions
        {
            Listeners = [new ListenerOptions { Address = "127.0.0.1:2587", Kind = "submission" }, new ListenerOptions { Address = "127.0.0.1:2465", Kind = "implicit-tls" }],
            Tls = new TlsOptions { Certificate = "cert.pem", Key = "key.pem" },
            UsersFile = "users",
            AcceptedDomains = ["Example.COM", ".example.org"],
            LocalRecipients = ["Alice@Example.com"],
        };

        var s = RelaySettings.Validate(o);

        Assert.Equal([ListenerKind.Smtp, ListenerKind.Submission, ListenerKind.ImplicitTls], s.Listeners.Select(l => l.Kind));
        Assert.True(Path.IsPathRooted(s.Tls!.CertificatePath));
        Assert.Equal(["example.com", ".example.org"], s.AcceptedDomains);
        Assert.Equal(["alice@example.com"], s.LocalRecipients);
    }

    [Theory]
    [InlineData("implicit tls without a certificate")]
    [InlineData("submission without users")]
    [InlineData("certificate without key")]
    [InlineData("unknown kind")]
    [InlineData("duplicate listener")]
    [InlineData("bad accepted domain")]
    [InlineData("bad local recipient")]
    [InlineData("zero max commands")]
    [InlineData("tiny line length")]
    public void Receiving_option_mistakes_are_one_line_errors(string mistake)
    {
        var o = new RelayOptions();
        switch (mistake)
        {
            case "implicit tls without a certificate":
                o.UsersFile = "users";
                o.Listeners = [new ListenerOptions { Address = "127.0.0.1:2465", Kind = "implicit-tls" }];
                break;
            case "submission without users":
                o.Listeners = [new ListenerOptions { Address = "127.0.0.1:2587", Kind = "submission" }];
                break;
            case "certificate without key":
                o.Tls = new TlsOptions { Certificate = "cert.pem" };
                break;
            case "unknown kind":
                o.Listeners = [new ListenerOptions { Address = "127.0.0.1:2587", Kind = "lmtp" }];
                break;
            case "duplicate listener":
                o.Listeners = [new ListenerOptions { Address = "127.0.0.1:2525" }];
                break;
            case "bad accepted domain":
                o.AcceptedDomains = ["not a domain"];
                break;
            case "bad local recipient":
                o.LocalRecipients = ["nobody"];
                break;
            case "zero max commands":
                o.Limits.MaxCommands = 0;
                break;
            case "tiny line length":
                o.Limits.MaxLineLength = 10;
                break;
        }

        var e = Assert.Throws<ConfigException>(() => RelaySettings.Validate(o));
        Assert.DoesNotContain('\n', e.Message);
    }
}
