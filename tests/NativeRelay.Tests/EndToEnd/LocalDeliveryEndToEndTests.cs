using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>Mail for a local domain goes through the whole relay into a Maildir (issue 7's wiring).</summary>
[Trait("Category", "EndToEnd")]
public sealed class LocalDeliveryEndToEndTests(ITestOutputHelper log)
{
    [Fact]
    public async Task A_message_for_a_local_domain_lands_in_the_users_maildir_with_return_path_and_delivered_to()
    {
        using var dir = new TempDir();
        string maildirs = dir.File("mail");
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--hostname", "relay.test",
             "--local-domain", "local.test", "--maildir-root", maildirs],
            port, dir.Path, log);

        string id = $"local-{Guid.NewGuid():N}@client.test";
        var data = Encoding.ASCII.GetBytes($"From: a@example.com\r\nTo: jane@local.test\r\nMessage-ID: <{id}>\r\nSubject: local\r\n\r\nhello jane\r\n");
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.ExpectAsync("EHLO client.test", 250);
            var reply = await client.SendMessageAsync("a@example.com", ["jane@local.test"], data);
            Assert.True(reply.Code == 250, reply + "\n" + relay.Describe());
        }

        // The file appears in new/ only once complete (written in tmp/, then renamed).
        string newDir = Path.Combine(maildirs, "jane", "new");
        string? file = null;
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < until && file is null)
        {
            if (Directory.Exists(newDir))
                file = Directory.GetFiles(newDir).FirstOrDefault();
            if (file is null)
                await Task.Delay(100);
        }
        Assert.True(file is not null, "no file in " + newDir + "\n" + relay.Describe());
        string text = File.ReadAllText(file!);
        Assert.StartsWith("Return-Path: <a@example.com>", text);
        Assert.Contains("Delivered-To: jane@local.test", text);
        Assert.Contains("by relay.test", text);           // our Received header
        Assert.Contains($"Message-ID: <{id}>", text);
        Assert.EndsWith("hello jane\n", text);            // Maildir stores LF line ends
        Assert.Empty(Directory.GetFiles(Path.Combine(maildirs, "jane", "tmp")));
    }
}
