package io.rund.ttrpc;

import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.MessageLite;
import com.google.protobuf.Parser;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * A service as a server offers it: its full protobuf name (for example
 * {@code containerd.task.v2.Task}) and one handler per method.
 */
public final class ServiceDefinition {

    /** Serves one method: takes the decoded request, returns the response or throws. */
    @FunctionalInterface
    public interface UnaryHandler<Q, R extends MessageLite> {
        R handle(CallContext context, Q request) throws Exception;
    }

    /** A method with its decoding bound in: payload in, payload out. */
    @FunctionalInterface
    interface Invoker {
        ByteString invoke(CallContext context, ByteString payload) throws Exception;
    }

    private final String name;
    private final Map<String, Invoker> methods;

    private ServiceDefinition(String name, Map<String, Invoker> methods) {
        this.name = name;
        this.methods = Map.copyOf(methods);
    }

    public static Builder builder(String name) {
        return new Builder(name);
    }

    public String name() {
        return name;
    }

    public java.util.Set<String> methodNames() {
        return methods.keySet();
    }

    Invoker method(String method) {
        return methods.get(method);
    }

    public static final class Builder {
        private final String name;
        private final Map<String, Invoker> methods = new LinkedHashMap<>();

        private Builder(String name) {
            if (name == null || name.isBlank()) {
                throw new IllegalArgumentException("a service needs a name");
            }
            this.name = name;
        }

        public <Q, R extends MessageLite> Builder unary(String method, Parser<Q> parser, UnaryHandler<Q, R> handler) {
            Objects.requireNonNull(parser, "parser");
            Objects.requireNonNull(handler, "handler");
            Invoker invoker = (context, payload) -> {
                Q request;
                try {
                    request = parser.parseFrom(payload);
                } catch (InvalidProtocolBufferException e) {
                    throw new TtrpcException(Code.INVALID_ARGUMENT,
                            "decode " + name + "/" + method + " request: " + e.getMessage());
                }
                R response = handler.handle(context, request);
                if (response == null) {
                    throw new TtrpcException(Code.INTERNAL, name + "/" + method + " returned no response");
                }
                return response.toByteString();
            };
            if (methods.putIfAbsent(method, invoker) != null) {
                throw new IllegalArgumentException("method " + name + "/" + method + " registered twice");
            }
            return this;
        }

        public ServiceDefinition build() {
            return new ServiceDefinition(name, methods);
        }
    }
}
