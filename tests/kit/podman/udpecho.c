/* A UDP echo server for the podman tests' busybox image (busybox's nc has no UDP): answers
 * every datagram on the given port with "udp from <sender address>". Built static at test time. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udpecho");
        return 1;
    }
    for (;;) {
        char buf[512], reply[64];
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) < 0)
            continue;
        int n = snprintf(reply, sizeof reply, "udp from %s", inet_ntoa(peer.sin_addr));
        sendto(fd, reply, n, 0, (struct sockaddr *)&peer, len);
    }
}
