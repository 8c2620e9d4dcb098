package io.rund.test;

import com.google.protobuf.MessageLite;
import com.google.protobuf.Parser;
import io.grpc.CallOptions;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.grpc.stub.ClientCalls;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * The kubelet's side of CRI, for tests: runtime.v1's RuntimeService and ImageService over
 * gRPC on containerd's unix socket. Calls are typed by their request and response
 * messages ({@code io.rund.test.cri}); each has a deadline.
 */
final class CriClient implements AutoCloseable {

    static final String RUNTIME = "runtime.v1.RuntimeService";
    static final String IMAGES = "runtime.v1.ImageService";

    private final EpollEventLoopGroup loop = new EpollEventLoopGroup(1);
    private final ManagedChannel channel;

    CriClient(Path socket) {
        channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                .eventLoopGroup(loop).channelType(EpollDomainSocketChannel.class).usePlaintext().build();
    }

    /** One unary call; a failure is CRI's status with the method named. */
    <Q extends MessageLite, R extends MessageLite> R call(String service, String method, Q request, Parser<R> parser,
            Duration deadline) {
        MethodDescriptor<Q, R> md = MethodDescriptor.<Q, R>newBuilder()
                .setType(MethodDescriptor.MethodType.UNARY)
                .setFullMethodName(MethodDescriptor.generateFullMethodName(service, method))
                .setRequestMarshaller(new Proto<>(null))
                .setResponseMarshaller(new Proto<>(parser))
                .build();
        try {
            return ClientCalls.blockingUnaryCall(channel, md,
                    CallOptions.DEFAULT.withDeadlineAfter(deadline.toMillis(), TimeUnit.MILLISECONDS), request);
        } catch (StatusRuntimeException e) {
            throw new CriException(method, e);
        }
    }

    <Q extends MessageLite, R extends MessageLite> R runtime(String method, Q request, Parser<R> parser) {
        return call(RUNTIME, method, request, parser, Duration.ofSeconds(120));
    }

    /** A CRI call that failed: the method and gRPC's status. */
    static final class CriException extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final io.grpc.Status.Code code;

        CriException(String method, StatusRuntimeException e) {
            super(method + ": " + e.getStatus().getCode() + ": " + e.getStatus().getDescription(), e);
            this.code = e.getStatus().getCode();
        }
    }

    /** Protocol buffers on the wire; the request side only writes. */
    private record Proto<T extends MessageLite>(Parser<T> parser) implements MethodDescriptor.Marshaller<T> {
        @Override
        public InputStream stream(T value) {
            return new java.io.ByteArrayInputStream(value.toByteArray());
        }

        @Override
        public T parse(InputStream stream) {
            try {
                return parser.parseFrom(stream);
            } catch (IOException e) {
                throw io.grpc.Status.INTERNAL.withDescription("unparsable CRI response: " + e.getMessage())
                        .asRuntimeException();
            }
        }
    }

    @Override
    public void close() throws InterruptedException {
        channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS).await(5, TimeUnit.SECONDS);
    }
}
