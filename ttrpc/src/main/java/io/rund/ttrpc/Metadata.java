package io.rund.ttrpc;

import io.rund.ttrpc.wire.KeyValue;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * Call metadata: keys (case-insensitive, kept lower-case) to one or more values, sent in
 * {@code Request.metadata}. containerd names its namespace here under
 * {@link #CONTAINERD_NAMESPACE}.
 */
public final class Metadata {

    /** The key under which containerd sends the namespace of a call. */
    public static final String CONTAINERD_NAMESPACE = "containerd-namespace-ttrpc";

    public static final Metadata EMPTY = new Metadata(Map.of());

    private final Map<String, List<String>> values;

    private Metadata(Map<String, List<String>> values) {
        this.values = values;
    }

    /** Metadata from alternating keys and values: {@code of("k1", "v1", "k2", "v2")}. */
    public static Metadata of(String... keysAndValues) {
        if (keysAndValues.length % 2 != 0) {
            throw new IllegalArgumentException("keys and values must come in pairs");
        }
        Map<String, List<String>> map = new LinkedHashMap<>();
        for (int i = 0; i < keysAndValues.length; i += 2) {
            add(map, keysAndValues[i], keysAndValues[i + 1]);
        }
        return freeze(map);
    }

    static Metadata fromWire(List<KeyValue> pairs) {
        if (pairs.isEmpty()) {
            return EMPTY;
        }
        Map<String, List<String>> map = new LinkedHashMap<>();
        for (KeyValue kv : pairs) {
            add(map, kv.getKey(), kv.getValue());
        }
        return freeze(map);
    }

    List<KeyValue> toWire() {
        List<KeyValue> out = new ArrayList<>();
        values.forEach((k, vs) -> vs.forEach(v -> out.add(KeyValue.newBuilder().setKey(k).setValue(v).build())));
        return out;
    }

    /** The first value of a key. */
    public Optional<String> get(String key) {
        List<String> vs = values.get(key.toLowerCase(Locale.ROOT));
        return vs == null ? Optional.empty() : Optional.of(vs.getFirst());
    }

    public List<String> getAll(String key) {
        return values.getOrDefault(key.toLowerCase(Locale.ROOT), List.of());
    }

    public Map<String, List<String>> asMap() {
        return values;
    }

    /** This metadata with {@code value} added under {@code key}. */
    public Metadata with(String key, String value) {
        Map<String, List<String>> map = new LinkedHashMap<>();
        values.forEach((k, vs) -> map.put(k, new ArrayList<>(vs)));
        add(map, key, value);
        return freeze(map);
    }

    public boolean isEmpty() {
        return values.isEmpty();
    }

    private static void add(Map<String, List<String>> map, String key, String value) {
        map.computeIfAbsent(key.toLowerCase(Locale.ROOT), k -> new ArrayList<>()).add(value);
    }

    private static Metadata freeze(Map<String, List<String>> map) {
        Map<String, List<String>> frozen = new LinkedHashMap<>();
        map.forEach((k, vs) -> frozen.put(k, List.copyOf(vs)));
        return new Metadata(Collections.unmodifiableMap(frozen));
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Metadata m && m.values.equals(values);
    }

    @Override
    public int hashCode() {
        return values.hashCode();
    }

    @Override
    public String toString() {
        return values.toString();
    }
}
