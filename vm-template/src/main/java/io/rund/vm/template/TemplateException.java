package io.rund.vm.template;

/** A template could not be built or used; the message names the template and the step. */
public final class TemplateException extends Exception {

    private static final long serialVersionUID = 1L;

    public TemplateException(String message, Throwable cause) {
        super(message, cause);
    }
}
