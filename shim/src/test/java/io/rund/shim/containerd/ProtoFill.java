package io.rund.shim.containerd;

import com.google.protobuf.ByteString;
import com.google.protobuf.Descriptors.EnumDescriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import java.nio.charset.StandardCharsets;

/**
 * Sets every field of a message to a value derived from the field's path, by the same rule
 * as fill() in src/test/go/containerd-interop: strings are the path, bytes the path's
 * bytes, bools true, enums 1, numbers fnv1a32(path) % 100000 + 1, repeated fields and maps
 * two entries ({@code path[i]}, {@code path#k i -> path#v i}). A message filled here and
 * one filled by containerd's Go code are equal exactly when both sides agree on every
 * field's name, number and type.
 */
final class ProtoFill {

    private ProtoFill() {}

    static <B extends Message.Builder> B fill(B builder) {
        fill(builder, "");
        return builder;
    }

    private static void fill(Message.Builder b, String path) {
        for (FieldDescriptor f : b.getDescriptorForType().getFields()) {
            String p = path.isEmpty() ? f.getName() : path + "." + f.getName();
            if (f.isMapField()) {
                for (int i = 0; i < 2; i++) {
                    Message.Builder entry = b.newBuilderForField(f);
                    FieldDescriptor key = entry.getDescriptorForType().findFieldByNumber(1);
                    FieldDescriptor value = entry.getDescriptorForType().findFieldByNumber(2);
                    entry.setField(key, p + "#k" + i).setField(value, p + "#v" + i);
                    b.addRepeatedField(f, entry.build());
                }
            } else if (f.isRepeated()) {
                for (int i = 0; i < 2; i++) {
                    b.addRepeatedField(f, value(b, f, p + "[" + i + "]"));
                }
            } else {
                b.setField(f, value(b, f, p));
            }
        }
    }

    private static Object value(Message.Builder parent, FieldDescriptor f, String path) {
        long h = hash(path);
        return switch (f.getJavaType()) {
            case STRING -> path;
            case BYTE_STRING -> ByteString.copyFrom(path, StandardCharsets.UTF_8);
            case BOOLEAN -> true;
            case INT -> (int) h;
            case LONG -> h;
            case ENUM -> {
                EnumDescriptor e = f.getEnumType();
                yield e.findValueByNumber(1);
            }
            case MESSAGE -> {
                Message.Builder child = parent.newBuilderForField(f);
                fill(child, path);
                yield child.build();
            }
            case FLOAT, DOUBLE -> throw new IllegalArgumentException(path + ": no rule for floating point");
        };
    }

    /** FNV-1a, 32 bits, over the UTF-8 bytes; then into 1..100000. */
    static long hash(String path) {
        int h = 0x811c9dc5;
        for (byte b : path.getBytes(StandardCharsets.UTF_8)) {
            h ^= b & 0xff;
            h *= 0x01000193;
        }
        return Integer.toUnsignedLong(h) % 100000 + 1;
    }
}
