# Run under Dante's socksify: bind(2)/listen(2)/accept(2) become a SOCKS BIND. Prints the
# address the proxy listens on, accepts one connection, reads up to 100 bytes and answers
# "echo:" followed by them.
use strict;
use warnings;
use Socket;
$| = 1;
socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
bind($s, sockaddr_in(0, INADDR_ANY)) or die "bind: $!";
listen($s, 1) or die "listen: $!";
my ($port, $ip) = sockaddr_in(getsockname($s));
print "LISTEN ", inet_ntoa($ip), " $port\n";
# Dante's Raccept reports a sockaddr_storage length, which Socket refuses to unpack, so the
# peer address is not printed.
accept(my $c, $s) or die "accept: $!";
print "ACCEPTED\n";
my $buf = "";
sysread($c, $buf, 100) // die "read: $!";
syswrite($c, "echo:$buf") // die "write: $!";
close($c);
print "DONE\n";
