using NativeRelay.Control;
using NativeRelay.Delivery;
using NativeRelay.Spool;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// The control socket with a fake queue behind it: every command reaches <see cref="IQueueAdmin"/>
/// with the right selector and comes back over a real Unix socket; bad requests get an error, not
/// a crash; the socket is mode 0600 and gone after the server stops; and the uid rules hold.
/// </summary>
public sealed class ControlSocketTests : IAsyncLifetime
{
    private sealed class FakeAdmin : IQueueAdmin
    {
        public readonly List<string> Calls = new();
        private static readonly QueueEntry One = new("0123456789ABCDEF", DateTimeOffset.FromUnixTimeSeconds(1_700_000_000), 1234,
            "a@example.com", ["b@example.org"], DateTimeOffset.FromUnixTimeSeconds(1_700_000_600), 3, "451 4.4.1 no", Held: true);

        public IReadOnlyList<QueueEntry> List(string? domain, TimeSpan? olderThan)
        {
            Calls.Add($"list {domain} {olderThan?.TotalSeconds}");
            return domain == "none.test" ? [] : [One, One with { Id = "0123456789ABCDEE", Held = false }];
        }

        public QueueEntry? Show(string id)
        {
            Calls.Add($"show {id}");
            return id == One.Id ? One : null;
        }

        private Task<int> Act(string verb, QueueSelector s)
        {
            Calls.Add($"{verb} {s.Id} {s.Domain}");
            return Task.FromResult(s.Id is null ? 7 : 1);
        }

        public Task<int> FlushAsync(QueueSelector s) => Act("flush", s);
        public Task<int> DeleteAsync(QueueSelector s) => Act("delete", s);
        public Task<int> BounceAsync(QueueSelector s) => Act("bounce", s);
        public Task<int> HoldAsync(QueueSelector s) => Act("hold", s);
        public Task<int> ReleaseAsync(QueueSelector s) => Act("release", s);

        public QueueStats Stats() => new(1, 2, 3, new Dictionary<string, int> { ["relay:x"] = 3 });
    }

    private readonly SpoolTestKit _kit = new();
    private readonly FakeAdmin _admin = new();
    private SpoolLog _spool = null!;
    private ControlServer _server = null!;

    public Task InitializeAsync()
    {
        _spool = _kit.Open();
        _server = ControlServer.Start(_spool, _admin, NativeRelay.Telemetry.Log.Null)
                  ?? throw new InvalidOperationException("the control socket did not open");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        await _spool.DisposeAsync();
        _kit.Dispose();
    }

    private Task<(List<ControlEntry> Entries, ControlResponse Final)> Send(string command, string? id = null, string? domain = null, long? olderThan = null) =>
        ControlClient.SendAsync(_kit.Directory, new ControlRequest { Command = command, Id = id, Domain = domain, OlderThanSeconds = olderThan }, TimeSpan.FromSeconds(30));

    [Fact]
    public async Task Every_command_reaches_the_queue_and_comes_back()
    {
        var (entries, final) = await Send("list", domain: "Example.ORG", olderThan: 3600);
        Assert.True(final.Ok);
        Assert.Equal(2, final.Count);
        Assert.Equal(["0123456789ABCDEF", "0123456789ABCDEE"], entries.Select(e => e.Id));
        Assert.Equal("a@example.com", entries[0].Sender);
        Assert.Equal(["b@example.org"], entries[0].Recipients);
        Assert.Equal(1_700_000_600_000, entries[0].NextAttemptUnixMs);
        Assert.True(entries[0].Held);
        Assert.Contains("list example.org 3600", _admin.Calls);

        (entries, final) = await Send("show", id: "0123456789abcdef");
        Assert.True(final.Ok);
        Assert.Equal("451 4.4.1 no", Assert.Single(entries).LastError);
        (entries, final) = await Send("show", id: "00000000000000AA");
        Assert.False(final.Ok);
        Assert.Contains("no message 00000000000000AA", final.Error);
        Assert.Empty(entries);

        foreach (var verb in new[] { "flush", "delete", "bounce", "hold", "release" })
        {
            (_, final) = await Send(verb, id: "0123456789ABCDEF");
            Assert.True(final.Ok, $"{verb}: {final.Error}");
            Assert.Equal(1, final.Count);
            Assert.Contains($"{verb} 0123456789ABCDEF ", _admin.Calls);
            (_, final) = await Send(verb, domain: "example.org");
            Assert.Equal(7, final.Count);
        }
        // flush may take everything; the others must name what they touch
        (_, final) = await Send("flush");
        Assert.True(final.Ok);
        (_, final) = await Send("delete");
        Assert.False(final.Ok);
        Assert.Contains("needs a queue id or a domain", final.Error);

        (_, final) = await Send("stats");
        Assert.True(final.Ok);
        Assert.Equal(3, final.Stats!.Held);
        Assert.Equal(3, final.Stats.ByDestination["relay:x"]);
        Assert.Equal(0, final.Spool!.LiveMessages);
        Assert.False(final.Spool.RefusingMail);
    }

    [Fact]
    public async Task Bad_requests_get_an_error_and_the_server_lives_on()
    {
        var (_, final) = await Send("explode");
        Assert.False(final.Ok);
        Assert.Contains("unknown command", final.Error);
        (_, final) = await Send("show", id: "not-an-id");
        Assert.False(final.Ok);
        Assert.Contains("not a queue id", final.Error);

        // Not JSON at all, on a raw connection.
        using (var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified))
        {
            await socket.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(_server.Path));
            await socket.SendAsync("this is not json\n"u8.ToArray());
            var buffer = new byte[4096];
            int n = await socket.ReceiveAsync(buffer);
            Assert.Contains("bad request", System.Text.Encoding.UTF8.GetString(buffer, 0, n));
        }
        (_, final) = await Send("list");
        Assert.True(final.Ok);
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task The_socket_is_private_and_goes_away_with_the_server()
    {
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(_server.Path));
        await _server.DisposeAsync();
        Assert.False(File.Exists(_server.Path));
        await Assert.ThrowsAsync<NoRelayException>(() => Send("list"));
        _server = ControlServer.Start(_spool, _admin, NativeRelay.Telemetry.Log.Null)!; // for DisposeAsync
    }

    [Fact]
    public void The_relay_serves_its_own_user_and_root_and_the_client_trusts_the_same()
    {
        Assert.True(UnixPeer.RelayServes(1000, 1000));
        Assert.True(UnixPeer.RelayServes(1000, 0));
        Assert.False(UnixPeer.RelayServes(1000, 1001));
        Assert.False(UnixPeer.RelayServes(1000, null));
        Assert.False(UnixPeer.RelayServes(0, 1000)); // a relay running as root serves only root
        Assert.True(UnixPeer.ClientTrusts(1000, 1000));
        Assert.True(UnixPeer.ClientTrusts(1000, 0));
        Assert.True(UnixPeer.ClientTrusts(0, 1000));
        Assert.False(UnixPeer.ClientTrusts(1000, 1001));
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task A_spool_directory_writable_by_others_gets_no_socket()
    {
        using var kit = new SpoolTestKit();
        await using var spool = kit.Open();
        File.SetUnixFileMode(kit.Directory, File.GetUnixFileMode(kit.Directory) | UnixFileMode.OtherWrite);
        Assert.Null(ControlServer.Start(spool, _admin, NativeRelay.Telemetry.Log.Null));
        Assert.False(File.Exists(ControlProtocol.SocketPath(kit.Directory)));
    }
}
